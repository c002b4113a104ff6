import { useEffect, useRef } from "react";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";

export type Series = { label: string; values: (number | null)[]; color: string; unit?: string };

/** A time-series line chart (uPlot), labelled for assistive technology, with its numbers in
 * a table beside it (the chart is an image; the table is what a screen reader reads). */
export function Chart({ title, times, series }: { title: string; times: number[]; series: Series[] }) {
  const box = useRef<HTMLDivElement>(null);
  useEffect(() => {
    const el = box.current;
    if (!el) return;
    const width = Math.max(el.clientWidth, 260);
    const plot = new uPlot(
      {
        width,
        height: 200,
        series: [{}, ...series.map((s) => ({ label: s.label, stroke: s.color, width: 2, points: { show: times.length < 40 } }))],
        // One point alone would stretch the time axis over years: pad it by an hour each side.
        scales: { x: { time: true, range: (_u, min, max) => (min === max ? [min - 3600, max + 3600] : [min, max]) } },
        axes: [{}, { size: 50 }],
        legend: { show: true },
      },
      [times, ...series.map((s) => s.values)] as uPlot.AlignedData,
      el,
    );
    const resize = () => plot.setSize({ width: Math.max(el.clientWidth, 260), height: 200 });
    window.addEventListener("resize", resize);
    return () => {
      window.removeEventListener("resize", resize);
      plot.destroy();
    };
  }, [times, series]);
  return (
    <figure className="chart">
      <figcaption>{title}</figcaption>
      <div ref={box} role="img" aria-label={`${title}: ${series.map((s) => `${s.label} total ${sum(s.values)}`).join(", ")}`} />
      <details>
        <summary>Data table: {title}</summary>
        <table>
          <thead>
            <tr>
              <th scope="col">Time</th>
              {series.map((s) => (
                <th scope="col" key={s.label}>
                  {s.label}
                </th>
              ))}
            </tr>
          </thead>
          <tbody>
            {times.map((t, i) => (
              <tr key={t}>
                <td>{new Date(t * 1000).toLocaleString()}</td>
                {series.map((s) => (
                  <td key={s.label}>{s.values[i] ?? "—"}</td>
                ))}
              </tr>
            ))}
          </tbody>
        </table>
      </details>
    </figure>
  );
}

function sum(values: (number | null)[]): number {
  return Math.round(values.reduce<number>((a, v) => a + (v ?? 0), 0) * 100) / 100;
}
