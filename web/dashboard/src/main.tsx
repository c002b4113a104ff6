import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import { App } from "./App";
import { session } from "./session";
import "./styles.css";

// Ask for the session (refresh cookie → access token) before React renders: the request is
// in flight while the app mounts; App's own refresh() joins this one.
void session.refresh();

createRoot(document.getElementById("root")!).render(
  <StrictMode>
    <App />
  </StrictMode>,
);
