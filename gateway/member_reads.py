"""What the gateway shows of a member (their points, level, history and orders) and of the
catalog, for the member API (the app of a member key) and the admin API (the app of an admin
key: the console's member and mall pages) alike."""

from __future__ import annotations

import asyncio

from loyalty.gateway.v1 import loyalty_pb2
from loyalty.levels.v1 import levels_pb2
from loyalty.mall.v1 import mall_pb2
from loyalty.points.v1 import points_pb2

from gateway.context import Gateway
from gateway.domain.audiences import segments_of
from gateway.participants import ask
from gateway.store.audiences import read_members_seen
from plumbing.validation import optional_id, require_id
from plumbing.wire import page_size


class MemberReads:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.timeout = gw.settings.call_timeout_seconds

    async def level(self, app: str, user_id: str) -> levels_pb2.Level:
        level: levels_pb2.Level = await ask(
            "levels",
            self.gw.participants.levels.GetLevel,
            levels_pb2.GetLevelRequest(app=app, user_id=user_id),
            deadline=self.timeout,
        )
        return level

    async def member(
        self, app: str, request: loyalty_pb2.GetMemberRequest, *, sighting: bool
    ) -> loyalty_pb2.GetMemberResponse:
        """``sighting``: the product backend asking counts as first sight of the member (as an
        event does); an operator looking one up does not."""
        user_id = require_id("user_id", request.user_id)
        if sighting:
            await self.gw.members(app, {user_id: None})
        balance, level, (tags, segments) = await asyncio.gather(
            ask(
                "points",
                self.gw.participants.points.GetBalance,
                points_pb2.GetBalanceRequest(app=app, user_id=user_id),
                deadline=self.timeout,
            ),
            self.level(app, user_id),
            self._tags_and_segments(app, user_id),
        )
        return loyalty_pb2.GetMemberResponse(
            user_id=user_id,
            points_available=balance.available,
            points_held=balance.held,
            points_expiring=list(balance.expiring),
            growth=level.lifetime_growth,
            tier=level.tier,
            tier_name=level.tier_name,
            next_tier=level.next_tier,
            growth_to_next_tier=level.growth_to_next_tier,
            perks=dict(level.perks),
            badges=[
                loyalty_pb2.BadgeAward(code=b.code, name=b.name, reward_points=b.reward_points)
                for b in level.badges
            ],
            tags=tags + segments,
            points_pending=balance.pending,
        )

    async def _tags_and_segments(self, app: str, user_id: str) -> tuple[list[str], list[str]]:
        """The backend's tags, and the program's segments the member is in now (one read)."""
        stored = await self.gw.programs.get(app)
        async with self.gw.resources.engine.connect() as conn:
            seen, tags = (await read_members_seen(conn, app, [user_id]))[user_id]
        now = self.gw.programs.now(stored)
        return tags, sorted(segments_of(stored.program.segments, seen, now))

    async def points_history(
        self, app: str, request: loyalty_pb2.ListPointsHistoryRequest
    ) -> loyalty_pb2.ListPointsHistoryResponse:
        user_id = require_id("user_id", request.user_id)
        page = await ask(
            "points",
            self.gw.participants.points.ListHistory,
            points_pb2.ListHistoryRequest(
                app=app,
                user_id=user_id,
                page_size=page_size(request.page_size),
                page_token=request.page_token,
            ),
            deadline=self.timeout,
        )
        return loyalty_pb2.ListPointsHistoryResponse(
            entries=[
                loyalty_pb2.PointsEntry(
                    amount=e.amount,
                    kind=e.kind,
                    reason=e.reason,
                    ref=e.ref,
                    created_at=e.created_at if e.HasField("created_at") else None,
                    expires_at=e.expires_at if e.HasField("expires_at") else None,
                )
                for e in page.entries
            ],
            next_page_token=page.next_page_token,
        )

    async def catalog(
        self, app: str, request: loyalty_pb2.ListCatalogRequest, *, member_required: bool
    ) -> loyalty_pb2.ListCatalogResponse:
        """The items on sale, with the stock left; for a member (the member API always names
        one) whether each is open to them. Without a member, every item as it stands."""
        check = require_id if member_required else optional_id
        user_id = check("user_id", request.user_id)
        p = self.gw.participants
        tier = (await self.level(app, user_id)).tier if user_id else ""
        page = await ask(
            "mall",
            p.mall.ListItems,
            mall_pb2.ListItemsRequest(
                app=app,
                user_id=user_id,
                tier=tier,
                page_size=page_size(request.page_size),
                page_token=request.page_token,
            ),
            deadline=self.timeout,
        )
        return loyalty_pb2.ListCatalogResponse(
            items=[
                loyalty_pb2.CatalogItem(
                    sku=item.sku,
                    name=item.name,
                    kind=mall_pb2.ItemKind.Name(item.kind).lower(),
                    price_points=item.price_points,
                    available=item.available,
                    sale_status=mall_pb2.SaleStatus.Name(item.sale_status).lower(),
                    eligible=item.eligible,
                    ineligible_reason=item.ineligible_reason,
                    unlimited=item.unlimited,
                    next_session_start=(
                        item.next_session_start if item.HasField("next_session_start") else None
                    ),
                )
                for item in page.items
            ],
            next_page_token=page.next_page_token,
        )

    async def orders(
        self, app: str, request: loyalty_pb2.ListOrdersRequest
    ) -> loyalty_pb2.ListOrdersResponse:
        user_id = require_id("user_id", request.user_id)
        page = await ask(
            "mall",
            self.gw.participants.mall.ListOrders,
            mall_pb2.ListOrdersRequest(
                app=app,
                user_id=user_id,
                page_size=page_size(request.page_size),
                page_token=request.page_token,
            ),
            deadline=self.timeout,
        )
        return loyalty_pb2.ListOrdersResponse(
            orders=[
                loyalty_pb2.MemberOrder(
                    order_id=o.order_id,
                    sku=o.sku,
                    quantity=o.quantity,
                    points_spent=o.price_points,
                    status=mall_pb2.OrderStatus.Name(o.status).lower(),
                    coupon_code=o.coupon_code,
                    carrier=o.carrier,
                    tracking_number=o.tracking_number,
                    created_at=o.created_at if o.HasField("created_at") else None,
                )
                for o in page.orders
            ],
            next_page_token=page.next_page_token,
        )
