// The app on the test page: what a page using /sdk/herald.js does, recording what it sees.
// The record lives in sessionStorage, so it spans a reload as the SDK's positions do.
(function () {
  const load = (k, d) => JSON.parse(sessionStorage.getItem(k) || JSON.stringify(d));
  const log = load("log", []);
  const rec = window.rec = {
    log, // [{t: "pub"|"reset", ch, o}] in the order the app saw them
    states: load("states", []),
    recovered: load("recovered", []), // [transport] of every subscribe reported as recovered
    errors: [],
    trace: [],
  };
  const keep = () => {
    sessionStorage.setItem("log", JSON.stringify(rec.log));
    sessionStorage.setItem("states", JSON.stringify(rec.states));
    sessionStorage.setItem("recovered", JSON.stringify(rec.recovered));
  };
  window.start = function (url, options, channels) {
    const client = (window.client = new Herald.HeraldClient({
      url,
      log: (line) => rec.trace.push(line),
      ...options,
    }));
    client.on("state", (s) => {
      rec.states.push(s.state);
      keep();
    });
    for (const ch of channels) {
      client.subscribe(ch, {
        onPublication(p) {
          rec.log.push({ t: "pub", ch, o: p.offset });
          keep();
        },
        onReset(reason, pos) {
          rec.log.push({ t: "reset", ch, o: pos.offset, reason });
          keep();
        },
        onSubscribed(info) {
          if (info.recovered) rec.recovered.push(info.transport);
          keep();
        },
        onError(e) {
          rec.errors.push(e.code + ": " + e.message);
        },
      });
    }
    client.connect();
  };
  // After a reload the page starts again with what it was given.
  const again = sessionStorage.getItem("start");
  window.begin = function (url, options, channels) {
    sessionStorage.setItem("start", JSON.stringify([url, options, channels]));
    window.start(url, options, channels);
  };
  if (again) window.start.apply(null, JSON.parse(again));
})();
