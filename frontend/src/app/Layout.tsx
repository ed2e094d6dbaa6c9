import { useState } from "react";
import { Link, NavLink, Outlet, useLocation, useNavigate } from "react-router";
import { useToken } from "../api/auth";
import { useHealth, useMe } from "../api/queries";
import { useShareParam } from "../lib/share";
import { TokenDialog } from "./TokenDialog";

export function Layout() {
  const token = useToken();
  const share = useShareParam();
  const me = useMe();
  const health = useHealth();
  const [tokenOpen, setTokenOpen] = useState(false);
  const sharedOnly = !!share && !token;
  return (
    <div className="app">
      <a className="skip" href="#main">
        Skip to content
      </a>
      <header className="topbar">
        <Link to={sharedOnly ? "#" : "/"} className="brand" onClick={(e) => sharedOnly && e.preventDefault()}>
          fv<span>audit</span>
        </Link>
        {sharedOnly ? (
          <span className="badge readonly" title="Opened from a share link: read-only, no login">
            shared · read-only
          </span>
        ) : (
          <nav aria-label="Main">
            <NavLink to="/" end>
              Runs
            </NavLink>
            <NavLink to="/models">Models</NavLink>
            <NavLink to="/image-sets">Image sets</NavLink>
            <NavLink to="/jobs" end>
              Jobs
            </NavLink>
            <NavLink to="/launch">Launch</NavLink>
            <NavLink to="/register">Register</NavLink>
            <NavLink to="/compare">Compare</NavLink>
            <NavLink to="/sweeps" end>
              Sweeps
            </NavLink>
            <NavLink to="/sweeps/new">New sweep</NavLink>
            <NavLink to="/detections">Detections</NavLink>
            <NavLink to="/search">Search</NavLink>
          </nav>
        )}
        <div className="spacer" />
        {!sharedOnly && token && <HeaderSearch />}
        <span
          className={`health ${health.data?.status === "ok" ? "ok" : health.error ? "down" : "degraded"}`}
          title={
            health.data
              ? `server ${health.data.status} · ${health.data.mode} mode · database ${health.data.database} · broker ${health.data.broker} · v${health.data.version}`
              : health.error
                ? "server unreachable"
                : "checking server"
          }
        >
          <span className="dot" aria-hidden="true" />
          {health.data ? health.data.mode : health.error ? "offline" : "…"}
        </span>
        <button type="button" className="token-btn" onClick={() => setTokenOpen(true)} title="API token">
          <svg aria-hidden="true" width="14" height="14" viewBox="0 0 16 16" fill="none" stroke="currentColor" strokeWidth="1.8">
            <circle cx="5" cy="8" r="3" />
            <path d="M8 8h7M12.5 8v3M15 8v2" />
          </svg>
          {token ? (me.data ? me.data.user + (me.data.is_admin ? " (admin)" : "") : me.error ? "invalid token" : "…") : "Sign in"}
        </button>
      </header>
      {token && me.error && (
        <div className="banner warn" role="alert">
          The saved API token was refused ({(me.error as Error).message}).{" "}
          <button type="button" className="link" onClick={() => setTokenOpen(true)}>
            Enter another token
          </button>
        </div>
      )}
      <main id="main" tabIndex={-1}>
        <Outlet />
      </main>
      {tokenOpen && <TokenDialog onClose={() => setTokenOpen(false)} />}
    </div>
  );
}

/** The header's label search: Enter opens /search?q=… (the search page has its own box). */
function HeaderSearch() {
  const navigate = useNavigate();
  const { pathname } = useLocation();
  const [text, setText] = useState("");
  if (pathname === "/search") return null;
  return (
    <form
      className="header-search"
      role="search"
      aria-label="Units by label"
      onSubmit={(e) => {
        e.preventDefault();
        const q = text.trim();
        navigate(q ? `/search?q=${encodeURIComponent(q)}` : "/search");
        setText("");
      }}
    >
      <input
        type="search"
        maxLength={200}
        aria-label="Search unit labels"
        placeholder="find units by label…"
        value={text}
        onChange={(e) => setText(e.target.value)}
      />
    </form>
  );
}
