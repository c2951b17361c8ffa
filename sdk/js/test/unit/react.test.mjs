// Server-side rendering: the bindings render without a browser and open nothing.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createElement as h } from "react";
import { renderToString } from "react-dom/server";
import { HeraldClient } from "../../dist/index.js";
import { HeraldProvider, useChannel, useConnectionState } from "../../dist/react.js";

test("rendering on a server connects nothing and reads as closed", () => {
  let opened = 0;
  const client = new HeraldClient({
    url: "/realtime",
    WebSocket: class {
      constructor() {
        opened++;
      }
    },
  });
  function Page() {
    const state = useConnectionState();
    const { last } = useChannel("news");
    return h("p", null, `${state} ${last === null}`);
  }
  const html = renderToString(h(HeraldProvider, { client }, h(Page)));
  assert.equal(html, "<p>closed true</p>");
  assert.equal(opened, 0);
  assert.equal(client.state, "closed");
});
