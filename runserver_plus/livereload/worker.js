/* runserver_plus live reload: the event stream, shared by every tab.
   Runs as a SharedWorker, or in the page where SharedWorker is missing. */
(function (scope) {
  "use strict";
  var MIN_DELAY = 100, MAX_DELAY = 5000;

  function stream(base, deliver) {
    var boot = null;
    var delay = MIN_DELAY;
    function connect() {
      var source = new EventSource(base + "events");
      source.addEventListener("hello", function (event) {
        var id = JSON.parse(event.data).boot;
        delay = MIN_DELAY;
        if (boot !== null && boot !== id) {
          // A new worker answers: the code changed and it is serving now.
          deliver({type: "reload"});
        }
        boot = id;
      });
      source.addEventListener("change", function (event) {
        deliver(JSON.parse(event.data));
      });
      source.onerror = function () {
        // Reconnect ourselves, with a growing delay, so that a server that is
        // gone for good is not asked again and again; a restarting one keeps
        // the connection waiting in its backlog and answers it.
        source.close();
        setTimeout(connect, delay);
        delay = Math.min(delay * 2, MAX_DELAY);
      };
    }
    connect();
  }

  if (typeof SharedWorkerGlobalScope !== "undefined" && scope instanceof SharedWorkerGlobalScope) {
    var ports = [];
    var base = scope.location.href.replace(/livereload-worker\.js(\?.*)?$/, "");
    stream(base, function (message) {
      ports.forEach(function (port) { port.postMessage(message); });
    });
    scope.onconnect = function (event) {
      var port = event.ports[0];
      ports.push(port);
      port.onmessage = function (message) {
        if (message.data === "bye") {
          ports = ports.filter(function (p) { return p !== port; });
        }
      };
      port.start();
    };
  } else {
    scope.__runserverPlusStream = stream;
  }
})(self);
