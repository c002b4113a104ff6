// A minimal history router: the app has a handful of pages, so no routing library.
import { useSyncExternalStore } from "react";

export const BASE = "/dashboard";
const listeners = new Set<() => void>();

export function navigate(to: string, replace = false): void {
  const url = to.startsWith(BASE) ? to : BASE + to;
  if (replace) history.replaceState(null, "", url);
  else history.pushState(null, "", url);
  for (const fn of listeners) fn();
}

window.addEventListener("popstate", () => {
  for (const fn of listeners) fn();
});

export function useLocation(): { path: string; search: URLSearchParams } {
  const href = useSyncExternalStore(
    (fn) => {
      listeners.add(fn);
      return () => listeners.delete(fn);
    },
    () => location.pathname + location.search,
  );
  const url = new URL(href, location.origin);
  const path = url.pathname.startsWith(BASE) ? url.pathname.slice(BASE.length) || "/" : url.pathname;
  return { path: path.replace(/\/+$/, "") || "/", search: url.searchParams };
}
