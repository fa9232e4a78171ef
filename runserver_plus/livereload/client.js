/* runserver_plus live reload: one event stream per browser (a SharedWorker
   where available), CSS swapped in place, everything else reloads. */
(function () {
  "use strict";
  var script = document.currentScript;
  var base = script ? script.src.replace(/livereload\.js(\?.*)?$/, "") : "/__runserver_plus__/";

  function swapStylesheets() {
    // Group the links by their URL without our cache-buster, so a swap that
    // comes while the last one still loads replaces it instead of adding up.
    var groups = new Map();
    var links = document.querySelectorAll('link[rel~="stylesheet"][href]');
    Array.prototype.forEach.call(links, function (link) {
      var url = new URL(link.href, location.href);
      if (url.origin !== location.origin) return;
      url.searchParams.delete("livereload");
      var key = url.href;
      if (!groups.has(key)) groups.set(key, []);
      groups.get(key).push(link);
    });
    var stamp = String(Date.now());
    groups.forEach(function (group) {
      var newest = group[group.length - 1];
      var url = new URL(newest.href, location.href);
      url.searchParams.set("livereload", stamp);
      var fresh = newest.cloneNode(false);
      fresh.href = url.href;
      var done = function () {
        group.forEach(function (old) { old.remove(); });
      };
      fresh.addEventListener("load", done);
      fresh.addEventListener("error", done);
      newest.after(fresh);
    });
  }

  function handle(message) {
    if (message.type === "css") {
      swapStylesheets();
    } else if (message.type === "reload" || message.type === "broken") {
      // "broken": the supervisor answers for a project that cannot start;
      // reloading shows its error page at this URL, without a history entry,
      // and that page reloads this URL again once the code is fixed.
      location.reload();
    }
  }

  if (typeof SharedWorker === "function") {
    try {
      var worker = new SharedWorker(base + "livereload-worker.js", {name: "runserver_plus-livereload"});
      worker.port.onmessage = function (event) { handle(event.data); };
      worker.port.start();
      window.addEventListener("pagehide", function () { worker.port.postMessage("bye"); });
      return;
    } catch (error) {
      /* fall through to a stream of our own */
    }
  }
  var connect = self.__runserverPlusStream;
  if (!connect) {
    var tag = document.createElement("script");
    tag.src = base + "livereload-worker.js";
    tag.onload = function () { self.__runserverPlusStream(base, handle); };
    document.head.appendChild(tag);
  } else {
    connect(base, handle);
  }
})();
