// The built-in capture page (/capture?session=TOKEN): mounts the widget with the page's token and
// follows the session's redirect_url when the check is done.
(function () {
  'use strict';
  var token = new URLSearchParams(window.location.search).get('session') || '';
  var root = document.getElementById('livecheck');
  window.LiveCheck.mount(root, {
    sessionToken: token,
    headingLevel: 1,
    followRedirect: true
  });
})();
