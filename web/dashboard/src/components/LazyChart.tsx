import { lazy, Suspense, type ComponentProps } from "react";

// uPlot (~20 kB gzip) loads with the first chart a user opens, not with the app.
const ChartImpl = lazy(() => import("./Chart").then((m) => ({ default: m.Chart })));

export function Chart(props: ComponentProps<typeof ChartImpl>) {
  return (
    <Suspense fallback={<p aria-live="polite">Loading chart…</p>}>
      <ChartImpl {...props} />
    </Suspense>
  );
}
