// A React page in StrictMode with two components on one channel, bundled by the test.
import { StrictMode, createElement as h, useState } from "react";
import { createRoot } from "react-dom/client";
import { HeraldClient } from "herald-client";
import { HeraldProvider, useChannel, useConnectionState } from "herald-client/react";

window.got = { A: [], B: [] };

function Feed({ name }) {
  const { last } = useChannel("react:room", (pub) => window.got[name].push(pub.data));
  return h("p", { id: `feed-${name}` }, `${name}: ${last ? last.data : "-"}`);
}

function Status() {
  window.appState = useConnectionState();
  return h("p", null, window.appState);
}

function App() {
  const [showA, setShowA] = useState(true);
  window.hideA = () => setShowA(false);
  return h("div", null, h(Status), showA ? h(Feed, { name: "A" }) : null, h(Feed, { name: "B" }));
}

window.mountApp = (url) => {
  const client = new HeraldClient({ url });
  const root = createRoot(document.getElementById("root"));
  root.render(h(StrictMode, null, h(HeraldProvider, { client }, h(App))));
  window.unmountApp = () => root.unmount();
};
