"""The points mall: catalog, two-phase stock reservations, orders and flash sales."""
