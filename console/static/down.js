// Ask again in five seconds, as a GET of the same address (a form is not sent twice).
setTimeout(function () { window.location.replace(window.location.href); }, 5000);
