// Small inline-SVG charts for the dashboard: an interval ("forest") chart and a line chart.
// No library: a few dozen lines each, drawn from the data on every refresh.

const SVG = "http://www.w3.org/2000/svg";
const MAX_MARKERS = 60;

/** Create an SVG element with attributes and children. */
export function svg(tag, attributes = {}, ...children) {
  const element = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value !== null && value !== undefined) element.setAttribute(name, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

/** About `count` round tick values covering [low, high]. */
export function ticks(low, high, count = 5) {
  if (!(high > low)) return [low];
  const raw = (high - low) / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * power).find((s) => s >= raw);
  const values = [];
  for (let v = Math.ceil(low / step) * step; v <= high + step * 1e-9; v += step) {
    values.push(Math.abs(v) < step * 1e-9 ? 0 : Number(v.toPrecision(12)));
  }
  return values;
}

function scale(domainLow, domainHigh, rangeLow, rangeHigh) {
  const span = domainHigh - domainLow || 1;
  return (value) => rangeLow + ((value - domainLow) / span) * (rangeHigh - rangeLow);
}

function format(value) {
  return Math.abs(value) >= 100 ? value.toFixed(0) : Number(value.toPrecision(3)).toString();
}

/**
 * Horizontal interval chart: one row per item, a bar from `lower` to `upper` and a dot at `mean`.
 * @param {{label: string, mean: number, lower: number, upper: number, color?: string,
 *          title?: string, image?: string}[]} rows  drawn top to bottom (`image`: a thumbnail
 *          drawn at the left edge)
 * @param {{width?: number, rowHeight?: number, labelWidth?: number, zero?: boolean,
 *          axisLabel?: string, domain?: [number, number]}} options  `domain` fixes the x range
 *          (so that several charts share one scale)
 * @returns {SVGSVGElement}
 */
export function intervalChart(rows, options = {}) {
  const width = options.width ?? 640;
  const rowHeight = options.rowHeight ?? 22;
  const labelWidth = options.labelWidth ?? 150;
  const top = 8;
  const bottom = 34;
  const right = 16;
  const height = top + rows.length * rowHeight + bottom;
  let low = options.domain ? options.domain[0] : Math.min(...rows.map((row) => row.lower));
  let high = options.domain ? options.domain[1] : Math.max(...rows.map((row) => row.upper));
  if (options.zero) {
    low = Math.min(low, 0);
    high = Math.max(high, 0);
  }
  if (!Number.isFinite(low) || !Number.isFinite(high)) {
    low = -1;
    high = 1;
  }
  const pad = (high - low) * 0.04 || 1;
  const x = scale(low - pad, high + pad, labelWidth, width - right);
  const chart = svg("svg", {
    viewBox: `0 0 ${width} ${height}`,
    width,
    height,
    class: "chart interval-chart",
    role: "img",
  });
  const axisY = top + rows.length * rowHeight;
  for (const tick of ticks(low - pad, high + pad, 6)) {
    chart.append(
      svg("line", { x1: x(tick), x2: x(tick), y1: top, y2: axisY, class: "grid" }),
      svg(
        "text",
        { x: x(tick), y: axisY + 14, class: "tick", "text-anchor": "middle" },
        format(tick),
      ),
    );
  }
  if (options.zero) {
    chart.append(svg("line", { x1: x(0), x2: x(0), y1: top, y2: axisY, class: "zero" }));
  }
  if (options.axisLabel) {
    const middle = (labelWidth + width - right) / 2;
    chart.append(
      svg("text", { x: middle, y: height - 4, class: "axis-label", "text-anchor": "middle" }, [
        options.axisLabel,
      ]),
    );
  }
  rows.forEach((row, index) => {
    const y = top + index * rowHeight + rowHeight / 2;
    const color = row.color ?? "var(--accent)";
    const group = svg("g", { class: "row" });
    const text =
      row.title ?? `${row.label}: ${format(row.mean)} [${format(row.lower)}, ${format(row.upper)}]`;
    if (row.image) {
      const side = rowHeight - 4;
      group.append(
        svg("image", {
          href: row.image,
          x: 2,
          y: y - side / 2,
          width: side * 1.33,
          height: side,
          preserveAspectRatio: "xMidYMid slice",
        }),
      );
    }
    group.append(
      svg("title", {}, text),
      svg("text", { x: labelWidth - 8, y: y + 4, class: "label", "text-anchor": "end" }, row.label),
      svg("line", {
        x1: x(row.lower),
        x2: x(row.upper),
        y1: y,
        y2: y,
        stroke: color,
        class: "bar",
      }),
      svg("circle", { cx: x(row.mean), cy: y, r: 4, fill: color, class: "dot" }),
    );
    chart.append(group);
  });
  return chart;
}

/**
 * Line chart of one or more series over a shared x axis.
 * @param {{name: string, color: string, points: {x: number, y: number}[]}[]} series
 * @param {{width?: number, height?: number, xLabel?: string, yLabel?: string,
 *          yMin?: number, yMax?: number, xFormat?: (x: number) => string}} options
 * @returns {SVGSVGElement}
 */
export function lineChart(series, options = {}) {
  const width = options.width ?? 480;
  const height = options.height ?? 240;
  const margin = { top: 12, right: 16, bottom: 40, left: 52 };
  const all = series.flatMap((line) => line.points);
  const chart = svg("svg", {
    viewBox: `0 0 ${width} ${height}`,
    width,
    height,
    class: "chart line-chart",
    role: "img",
  });
  if (!all.length) {
    chart.append(
      svg("text", { x: width / 2, y: height / 2, class: "empty", "text-anchor": "middle" }, [
        "no labels yet",
      ]),
    );
    return chart;
  }
  const xLow = Math.min(...all.map((p) => p.x));
  let xHigh = Math.max(...all.map((p) => p.x));
  if (xHigh === xLow) xHigh = xLow + 1;
  const yLow = options.yMin ?? Math.min(...all.map((p) => p.y));
  let yHigh = options.yMax ?? Math.max(...all.map((p) => p.y));
  if (yHigh === yLow) yHigh = yLow + 1;
  const x = scale(xLow, xHigh, margin.left, width - margin.right);
  const y = scale(yLow, yHigh, height - margin.bottom, margin.top);
  const xFormat = options.xFormat ?? format;
  for (const tick of ticks(yLow, yHigh, 4)) {
    chart.append(
      svg("line", {
        x1: margin.left,
        x2: width - margin.right,
        y1: y(tick),
        y2: y(tick),
        class: "grid",
      }),
      svg(
        "text",
        { x: margin.left - 6, y: y(tick) + 4, class: "tick", "text-anchor": "end" },
        format(tick),
      ),
    );
  }
  for (const tick of ticks(xLow, xHigh, 4)) {
    chart.append(
      svg(
        "text",
        { x: x(tick), y: height - margin.bottom + 16, class: "tick", "text-anchor": "middle" },
        [xFormat(tick)],
      ),
    );
  }
  if (options.xLabel) {
    chart.append(
      svg(
        "text",
        {
          x: (margin.left + width - margin.right) / 2,
          y: height - 4,
          class: "axis-label",
          "text-anchor": "middle",
        },
        [options.xLabel],
      ),
    );
  }
  if (options.yLabel) {
    chart.append(
      svg(
        "text",
        {
          x: 12,
          y: (margin.top + height - margin.bottom) / 2,
          class: "axis-label",
          "text-anchor": "middle",
          transform: `rotate(-90 12 ${(margin.top + height - margin.bottom) / 2})`,
        },
        [options.yLabel],
      ),
    );
  }
  for (const line of series) {
    if (!line.points.length) continue;
    const path = line.points.map(
      (p, i) => `${i ? "L" : "M"}${x(p.x).toFixed(1)},${y(p.y).toFixed(1)}`,
    );
    chart.append(
      svg("path", { d: path.join(""), stroke: line.color, class: "line" }, [
        svg("title", {}, line.name),
      ]),
    );
    // every point gets a marker while there are few (one point draws no line), else the last
    const marked = line.points.length <= MAX_MARKERS ? line.points : line.points.slice(-1);
    for (const p of marked) {
      chart.append(
        svg("circle", { cx: x(p.x), cy: y(p.y), r: 3, fill: line.color, class: "point" }),
      );
    }
  }
  return chart;
}
