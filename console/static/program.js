// The listing of a checked program opens at its first wrong line.
(function () {
  "use strict";
  var wrong = document.querySelector(".listing .line.wrong");
  if (wrong) {
    var listing = wrong.parentElement;
    listing.scrollTop = wrong.offsetTop - listing.offsetTop - listing.clientHeight / 3;
  }
})();
