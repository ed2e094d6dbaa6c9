import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import { captureTokenFromUrl } from "./api/auth";
import { App } from "./app/App";
import "./styles.css";

captureTokenFromUrl();
createRoot(document.getElementById("root")!).render(
  <StrictMode>
    <App />
  </StrictMode>,
);
