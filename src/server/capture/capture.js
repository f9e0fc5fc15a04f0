// livecheck capture widget: window.LiveCheck.mount(element, options).
//
// Takes a selfie in the browser and checks it through a one-time capture session: camera preview
// with a face oval, framing guidance from the server's quality gates (/capture/precheck, on a
// small copy of the preview), capture, upload, result. Without a camera, or when permission is
// refused, a photo can be uploaded instead. No third-party code, no request anywhere but the
// livecheck origin this script was loaded from.
//
// options:
//   sessionToken   the session's one-time token (required)
//   apiBase        livecheck's origin (default: where this script was loaded from)
//   onResult(r)    called once with {verified, reason, detail, reference, sessionId}
//   onError(e)     called with {code, message} when no result can be had
//   headingLevel   1-6, the level of the widget's headings (default 2)
//   followRedirect go to the session's redirect_url (with session_id) when done (the page does)
//   stylesheet     false: do not add livecheck's /capture.css to the page (style it yourself)
//
// mount() returns {unmount()}; unmounting stops the camera.
(function () {
  'use strict';

  var CHECK_PATH = '/api/onboarding/biometrics/face/liveliness_check/';
  var PRECHECK_EVERY_MS = 900;
  var PRECHECK_MAX_SIDE = 480;
  var REDIRECT_AFTER_MS = 3000;
  var MAX_UPLOAD_BYTES = 10 * 1024 * 1024;

  var current = document.currentScript;
  var scriptOrigin = current && current.src ? new URL(current.src, window.location.href).origin
    : window.location.origin;

  // Why the camera is not available, in plain words, by getUserMedia's error name.
  var CAMERA_ERRORS = {
    NotAllowedError: 'Camera access was refused. You can allow the camera in your browser\'s ' +
      'settings for this site and reload the page, or upload a photo instead.',
    SecurityError: 'This page is not allowed to use the camera. Upload a photo instead.',
    NotFoundError: 'No camera was found on this device. Upload a photo instead.',
    OverconstrainedError: 'No suitable camera was found on this device. Upload a photo instead.',
    NotReadableError: 'The camera is in use by another app or could not start. Close other ' +
      'apps that use it and reload the page, or upload a photo instead.',
    AbortError: 'The camera could not start. Reload the page to try again, or upload a photo ' +
      'instead.',
    unsupported: 'This browser cannot use a camera here. Upload a photo instead.'
  };

  // What a not-verified reason means for the person.
  var REASONS = {
    live: 'A live person was confirmed.',
    spoof: 'We could not confirm that a live person was in front of the camera.',
    no_face: 'No face was found in the photo.',
    multiple_faces: 'More than one face was found in the photo.',
    face_too_small: 'The face was too small in the photo.',
    face_too_close: 'The face was too close to the camera.',
    image_too_small: 'The photo was too small.',
    resubmitted_image: 'This photo was already used for a check.'
  };

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text) node.textContent = text;
    return node;
  }

  function retryAfterMs(response) {
    var s = parseInt(response.headers.get('retry-after') || '1', 10);
    return (isNaN(s) ? 1 : Math.min(Math.max(s, 1), 30)) * 1000;
  }

  function readJson(response) {
    return response.json().catch(function () { return {}; });
  }

  function blobToBase64(blob) {
    return new Promise(function (resolve, reject) {
      var reader = new FileReader();
      reader.onload = function () {
        var url = String(reader.result);
        resolve(url.slice(url.indexOf(',') + 1));
      };
      reader.onerror = function () { reject(reader.error); };
      reader.readAsDataURL(blob);
    });
  }

  function canvasBlob(canvas, quality) {
    return new Promise(function (resolve, reject) {
      canvas.toBlob(function (b) {
        if (b) resolve(b); else reject(new Error('could not encode the picture'));
      }, 'image/jpeg', quality);
    });
  }

  // A copy of `source` (video or bitmap, `w` x `h`) with its longer side at most `maxSide`.
  function drawScaled(source, w, h, maxSide) {
    var scale = Math.min(1, maxSide / Math.max(w, h));
    var canvas = document.createElement('canvas');
    canvas.width = Math.max(1, Math.round(w * scale));
    canvas.height = Math.max(1, Math.round(h * scale));
    canvas.getContext('2d').drawImage(source, 0, 0, canvas.width, canvas.height);
    return canvas;
  }

  function mount(root, options) {
    options = options || {};
    if (!root || !root.appendChild) throw new Error('LiveCheck.mount: an element is required');
    var token = String(options.sessionToken || '');
    var base = String(options.apiBase || scriptOrigin).replace(/\/+$/, '');
    var level = Math.min(Math.max(parseInt(options.headingLevel || 2, 10) || 2, 1), 6);
    var onResult = typeof options.onResult === 'function' ? options.onResult : function () {};
    var onError = typeof options.onError === 'function' ? options.onError : function () {};

    // The widget's stylesheet, from livecheck, once per page (the capture page links it itself).
    var styled = Array.prototype.some.call(document.querySelectorAll('link[rel="stylesheet"]'),
      function (l) { return /\/capture\.css$/.test(l.href); });
    if (!styled && options.stylesheet !== false) {
      var link = document.createElement('link');
      link.rel = 'stylesheet';
      link.href = base + '/capture.css';
      document.head.appendChild(link);
    }

    var stream = null;
    var timer = null;
    var busy = false;
    var finished = false;
    var session = null;

    // ---- markup (built with the DOM: no HTML strings, as the page's Trusted Types demand) ----
    var box = el('section', 'lc');
    box.setAttribute('aria-labelledby', 'lc-title');
    var title = el('h' + level, 'lc-title', 'Take a selfie');
    title.id = 'lc-title';
    var status = el('p', 'lc-status', 'Starting…');
    status.setAttribute('role', 'status');
    status.setAttribute('aria-live', 'polite');

    var stage = el('div', 'lc-stage');
    var video = el('video', 'lc-video');
    video.muted = true;
    video.autoplay = true;
    video.setAttribute('playsinline', '');
    video.setAttribute('aria-label', 'Camera preview');
    var oval = el('div', 'lc-oval');
    oval.setAttribute('aria-hidden', 'true');
    stage.appendChild(video);
    stage.appendChild(oval);

    var actions = el('div', 'lc-actions');
    var capture = el('button', 'lc-button lc-capture', 'Take photo');
    capture.type = 'button';
    capture.disabled = true;
    var upload = el('label', 'lc-upload');
    var uploadText = el('span', null, 'Upload a photo instead');
    var file = el('input', 'lc-file');
    file.type = 'file';
    file.accept = 'image/jpeg,image/png,image/webp';
    upload.appendChild(uploadText);
    upload.appendChild(file);
    actions.appendChild(capture);
    actions.appendChild(upload);
    var note = el('p', 'lc-note', 'Your photo is sent once, for this check only.');

    var spinner = el('div', 'lc-spinner');
    spinner.setAttribute('aria-hidden', 'true');

    var result = el('div', 'lc-result');
    var icon = el('span', 'lc-result-icon');
    icon.setAttribute('aria-hidden', 'true');
    var resultTitle = el('h' + level, 'lc-result-title');
    resultTitle.tabIndex = -1;
    var resultDetail = el('p', 'lc-result-detail');
    var next = el('a', 'lc-button lc-continue', 'Continue');
    result.appendChild(icon);
    result.appendChild(resultTitle);
    result.appendChild(resultDetail);
    result.appendChild(next);

    box.appendChild(title);
    box.appendChild(status);
    box.appendChild(stage);
    box.appendChild(spinner);
    box.appendChild(actions);
    box.appendChild(note);
    box.appendChild(result);
    root.appendChild(box);

    // data-screen: starting, camera, upload, checking, result, error (tests and integrators'
    // CSS can key on it); data-outcome on the result screen: verified or not_verified.
    function screen(name) {
      box.setAttribute('data-screen', name);
      stage.hidden = name !== 'camera';
      capture.hidden = name !== 'camera';
      upload.hidden = !(name === 'camera' || name === 'upload');
      note.hidden = !(name === 'camera' || name === 'upload');
      spinner.hidden = !(name === 'starting' || name === 'checking');
      result.hidden = !(name === 'result' || name === 'error');
      title.hidden = name === 'result' || name === 'error';
      status.hidden = name === 'result' || name === 'error';
    }

    function say(text, guidance) {
      status.textContent = text;
      if (guidance) box.setAttribute('data-guidance', guidance);
      else box.removeAttribute('data-guidance');
    }

    function stopCamera() {
      if (timer) { clearTimeout(timer); timer = null; }
      if (stream) {
        stream.getTracks().forEach(function (t) { t.stop(); });
        stream = null;
      }
      video.srcObject = null;
    }

    function fail(code, message) {
      finished = true;
      stopCamera();
      box.removeAttribute('data-outcome');
      icon.textContent = '!';
      resultTitle.textContent = 'Something went wrong';
      resultDetail.textContent = message;
      next.hidden = true;
      screen('error');
      resultTitle.focus();
      onError({ code: code, message: message });
    }

    function request(path, init) {
      init.headers = init.headers || {};
      init.headers['x-session-token'] = token;
      init.credentials = 'omit';
      init.referrerPolicy = 'no-referrer';
      return fetch(base + path, init);
    }

    // ---- the session ----
    function start() {
      screen('starting');
      if (!token) {
        fail('no_session', 'This link is incomplete: it has no session. Ask for a new link.');
        return;
      }
      request('/capture/session', { method: 'GET' }).then(function (r) {
        return readJson(r).then(function (body) {
          if (!r.ok) {
            fail('session_refused', (body && body.message) ||
              'This link can no longer be used. Ask for a new link.');
            return;
          }
          session = body.data || {};
          startCamera();
        });
      }, function () {
        fail('network', 'The service cannot be reached. Check your connection and reload the page.');
      });
    }

    // ---- the camera ----
    function startCamera() {
      var media = navigator.mediaDevices;
      if (!media || typeof media.getUserMedia !== 'function') {
        fallback('unsupported');
        return;
      }
      say('Allow the camera when your browser asks.');
      media.getUserMedia({
        video: { facingMode: 'user', width: { ideal: 1280 }, height: { ideal: 720 } },
        audio: false
      }).then(function (s) {
        if (finished) { s.getTracks().forEach(function (t) { t.stop(); }); return; }
        stream = s;
        video.srcObject = s;
        var played = video.play();
        return Promise.resolve(played).then(function () {
          screen('camera');
          say('Put your face inside the oval.');
          schedulePrecheck(300);
        });
      }).catch(function (err) {
        stopCamera();
        fallback(err && err.name);
      });
    }

    function fallback(errorName) {
      var message = CAMERA_ERRORS[errorName] || CAMERA_ERRORS.AbortError;
      box.setAttribute('data-camera-error', errorName || 'unknown');
      screen('upload');
      uploadText.textContent = 'Choose a photo';
      say(message);
    }

    // ---- guidance ----
    function schedulePrecheck(ms) {
      if (timer) clearTimeout(timer);
      timer = setTimeout(precheckFrame, ms);
    }

    var failedPrechecks = 0;
    function precheckFrame() {
      timer = null;
      if (finished || busy || !stream) return;
      var w = video.videoWidth, h = video.videoHeight;
      if (!w || !h) { schedulePrecheck(200); return; }
      canvasBlob(drawScaled(video, w, h, PRECHECK_MAX_SIDE), 0.8).then(precheck).then(function (g) {
        if (finished || busy || !stream) return;
        if (g.retryMs) { schedulePrecheck(g.retryMs); return; }
        if (g.unavailable) {
          failedPrechecks += 1;
          if (failedPrechecks >= 3) {
            capture.disabled = false;
            say('Guidance is not available right now. Take the photo when your face is ' +
              'inside the oval.');
          }
        } else {
          failedPrechecks = 0;
          capture.disabled = !g.ready;
          say(g.message, g.guidance);
        }
        schedulePrecheck(PRECHECK_EVERY_MS);
      }).catch(function () { schedulePrecheck(PRECHECK_EVERY_MS); });
    }

    // The server's framing guidance for a small JPEG: {ready, guidance, message},
    // {retryMs} (throttled or busy: ask again later), {refused} (the token cannot be used),
    // or {unavailable}.
    function precheck(blob) {
      return request('/capture/precheck', {
        method: 'POST', headers: { 'content-type': 'image/jpeg' }, body: blob
      }).then(function (r) {
        return readJson(r).then(function (body) {
          if (r.ok && body.data) return body.data;
          if (r.status === 429 || r.status === 503) return { retryMs: retryAfterMs(r) };
          if (r.status === 401) {
            fail('session_refused', body.message || 'This link can no longer be used.');
            return { refused: true, retryMs: 0 };
          }
          return { unavailable: true };
        });
      }, function () { return { unavailable: true }; });
    }

    // ---- capture and upload ----
    capture.addEventListener('click', function () {
      if (busy || finished || !stream) return;
      var w = video.videoWidth, h = video.videoHeight;
      if (!w || !h) return;
      var canvas = drawScaled(video, w, h, 1920);
      stopCamera();
      canvasBlob(canvas, 0.92).then(submit, function () {
        fail('capture', 'The photo could not be taken. Reload the page to try again.');
      });
    });

    file.addEventListener('change', function () {
      var f = file.files && file.files[0];
      file.value = '';
      if (!f || busy || finished) return;
      if (f.size > MAX_UPLOAD_BYTES) {
        say('This photo is too large (over 10 MB). Choose a smaller one.');
        return;
      }
      // Ask about the photo's framing first: the session allows one check only.
      busy = true;
      say('Looking at your photo…');
      var looked = typeof createImageBitmap === 'function'
        ? createImageBitmap(f).then(function (bmp) {
          var small = drawScaled(bmp, bmp.width, bmp.height, PRECHECK_MAX_SIDE);
          if (bmp.close) bmp.close();
          return canvasBlob(small, 0.85).then(precheck);
        }, function () { return { unreadable: true }; })
        : Promise.resolve({ unavailable: true });
      looked.then(function (g) {
        busy = false;
        if (finished || g.refused) return;
        if (g.unreadable) {
          say('This file could not be read as a photo. Choose a JPEG, PNG or WebP photo.');
        } else if (g.guidance && !g.ready) {
          say('In this photo: ' + g.message + ' Choose another photo.', g.guidance);
        } else {
          stopCamera();
          submit(f);
        }
      });
    });

    function submit(blob) {
      if (busy || finished) return;
      busy = true;
      screen('checking');
      say('Checking your photo…');
      blobToBase64(blob).then(function (b64) {
        return send(JSON.stringify({ image: b64 }), 0);
      }).catch(function () {
        busy = false;
        fail('network', 'The photo could not be sent. Check your connection and reload the page.');
      });
    }

    function send(body, attempt) {
      return request(CHECK_PATH, {
        method: 'POST', headers: { 'content-type': 'application/json' }, body: body
      }).then(function (r) {
        return readJson(r).then(function (env) {
          // Overloaded or throttled: the token was not spent; try again as told, a few times.
          if ((r.status === 503 || r.status === 429) && attempt < 3) {
            say('The service is busy. Trying again…');
            return new Promise(function (res) { setTimeout(res, retryAfterMs(r)); })
              .then(function () { return send(body, attempt + 1); });
          }
          busy = false;
          if (r.ok && env.data) { show(env.data); return; }
          fail(r.status === 401 ? 'session_refused' : 'check_failed',
            env.message || 'The check could not be made.');
        });
      });
    }

    function show(data) {
      finished = true;
      var verified = !!(data.verification && data.verification.status === 'VERIFIED');
      var sessionId = (data.session && data.session.id) || (session && session.session_id);
      box.setAttribute('data-outcome', verified ? 'verified' : 'not_verified');
      icon.textContent = verified ? '✓' : '✗';
      resultTitle.textContent = verified ? 'Verified' : 'Not verified';
      resultDetail.textContent = verified ? 'Thank you. You are done.'
        : (REASONS[data.reason] || data.detail || 'The check did not pass.');
      var redirect = options.followRedirect && session && session.redirect_url;
      if (redirect) {
        var target = new URL(redirect);
        if (sessionId) target.searchParams.set('session_id', sessionId);
        next.href = target.toString();
        next.hidden = false;
        setTimeout(function () { window.location.assign(target.toString()); }, REDIRECT_AFTER_MS);
      } else {
        next.hidden = true;
      }
      screen('result');
      resultTitle.focus();
      onResult({
        verified: verified,
        reason: data.reason,
        detail: data.detail,
        reference: data.verification && data.verification.reference,
        sessionId: sessionId
      });
    }

    start();
    return {
      unmount: function () {
        finished = true;
        stopCamera();
        if (box.parentNode) box.parentNode.removeChild(box);
      }
    };
  }

  window.LiveCheck = { mount: mount, version: '1' };
})();
