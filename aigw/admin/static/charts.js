// The dashboard's charts: SVG built here, no library. Every bar carries its number in
// `data-value` (and a tooltip), so what is drawn can be checked against the ledger.

import { formatInteger, h, s } from './dom.js';

const WIDTH = 600; // viewBox units; the SVG scales to its panel
const PLOT_HEIGHT = 190;
const REJECTION_COLOR = '#e15759';
const compact = new Intl.NumberFormat('en-US',
  { notation: 'compact', maximumSignificantDigits: 3 });

// The rendered width of a 12px label, measured once in a hidden SVG (fonts differ by system).
const widths = new Map();
function textWidth(text) {
  if (!widths.has(text)) {
    const probe = s('svg', { class: 'chart probe', width: 0, height: 0 }, s('text', {}, text));
    document.body.append(probe);
    widths.set(text, probe.firstChild.getComputedTextLength() || text.length * 7);
    probe.remove();
  }
  return widths.get(text);
}

// Round-number axis ticks from 0 to at least `max`.
function ticks(max, wholeNumbers) {
  if (!(max > 0)) return [0, 1];
  const rough = max / 4;
  const magnitude = 10 ** Math.floor(Math.log10(rough));
  const norm = rough / magnitude;
  const nice = norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 2.5 ? 2.5 : norm <= 5 ? 5 : 10;
  const step = wholeNumbers ? Math.max(1, Math.ceil(nice * magnitude)) : nice * magnitude;
  const list = [];
  for (let i = 0; i <= Math.ceil(max / step - 1e-9); i += 1) {
    list.push(Number((i * step).toPrecision(12)));
  }
  return list;
}

function legend(series, width) {
  const group = s('g', { class: 'legend' });
  let x = 0;
  let y = 0;
  for (const item of series) {
    const itemWidth = 18 + textWidth(item.label);
    if (x > 0 && x + itemWidth > width) {
      x = 0;
      y += 18;
    }
    group.append(s('g', { 'data-legend': item.key, transform: `translate(${x},${y})` },
      s('rect', { x: 0, y: -10, width: 12, height: 12, rx: 2, fill: item.color }),
      s('text', { x: 17, y: 0 }, item.label)));
    x += itemWidth + 14;
  }
  return { group, height: y + 18 };
}

function chart(name, title, width, height) {
  const svg = s('svg', { class: 'chart', viewBox: `0 0 ${width} ${height}`, role: 'img',
    'aria-label': title, 'data-chart': name });
  svg.append(s('title', {}, title));
  return svg;
}

// Stacked bars, one per day; each series ({key, label, color, values}) is a
// <g data-series="key"> of <rect data-day data-value>. A series with nothing to draw (a
// subscription with only refused requests) gets no bars and no legend entry.
export function stackedBars({ name, title, days, series: all, yLabel, wholeNumbers, format }) {
  const series = all.filter((item) => item.values.some((value) => value > 0));
  if (series.length === 0) {
    return h('p', { class: 'muted', 'data-chart-empty': name }, `${yLabel}: none in this period.`);
  }
  const sums = days.map((_, i) => series.reduce((sum, item) => sum + item.values[i], 0));
  const scale = ticks(Math.max(...sums), wholeNumbers);
  const labels = scale.map((tick) => compact.format(tick));
  const left = Math.max(...labels.map(textWidth)) + 34;
  const right = WIDTH - 12;
  const plotWidth = right - left;
  const key = legend(series, plotWidth);
  key.group.setAttribute('transform', `translate(${left},16)`);
  const top = 16 + key.height + 8;
  const bottom = top + PLOT_HEIGHT;
  const svg = chart(name, title, WIDTH, bottom + 42);
  svg.append(key.group);

  const yMax = scale[scale.length - 1];
  const yOf = (value) => bottom - (value / yMax) * PLOT_HEIGHT;
  scale.forEach((tick, i) => {
    svg.append(s('line', { class: 'grid', x1: left, x2: right, y1: yOf(tick), y2: yOf(tick) }),
      s('text', { x: left - 6, y: yOf(tick) + 4, 'text-anchor': 'end' }, labels[i]));
  });
  svg.append(s('text', { class: 'axis-label', 'text-anchor': 'middle',
    transform: `translate(16,${top + PLOT_HEIGHT / 2}) rotate(-90)` }, yLabel));

  const band = plotWidth / days.length;
  const barWidth = Math.min(48, band * 0.7);
  const every = Math.ceil((days.length * 44) / plotWidth); // day labels must not overlap
  days.forEach((day, i) => {
    if (i % every !== 0) return;
    svg.append(s('text', { x: left + band * (i + 0.5), y: bottom + 18, 'text-anchor': 'middle' },
      day.slice(5)));
  });
  svg.append(s('line', { class: 'axis', x1: left, x2: right, y1: bottom, y2: bottom }),
    s('text', { class: 'axis-label', x: left + plotWidth / 2, y: bottom + 34,
      'text-anchor': 'middle' }, 'Day (UTC, month-day)'));

  const base = new Array(days.length).fill(0);
  for (const item of series) {
    const group = s('g', { 'data-series': item.key, fill: item.color });
    item.values.forEach((value, i) => {
      if (!(value > 0)) return;
      const y0 = yOf(base[i]);
      const y1 = yOf(base[i] + value);
      base[i] += value;
      group.append(s('rect', { x: left + band * i + (band - barWidth) / 2, y: y1,
        width: barWidth, height: Math.max(0.5, y0 - y1), 'data-day': days[i], 'data-value': value },
      s('title', {}, `${item.label}, ${days[i]}: ${format(value)}`)));
    });
    svg.append(group);
  }
  return svg;
}

// Horizontal bars, one per reason ({key, label, requests}): <rect data-reason data-value>.
export function reasonBars(items) {
  const width = 460;
  const row = 26;
  const left = Math.min(220, Math.max(...items.map((item) => textWidth(item.label))) + 12);
  const right = width - 40;
  const top = 8;
  const bottom = top + row * items.length;
  const svg = chart('rejections', 'Rejected requests by reason', width, bottom + 40);
  const scale = ticks(Math.max(...items.map((item) => item.requests)), true);
  const xOf = (value) => left + (value / scale[scale.length - 1]) * (right - left);
  for (const tick of scale) {
    svg.append(s('line', { class: 'grid', x1: xOf(tick), x2: xOf(tick), y1: top, y2: bottom }),
      s('text', { x: xOf(tick), y: bottom + 16, 'text-anchor': 'middle' }, compact.format(tick)));
  }
  items.forEach((item, i) => {
    const y = top + row * i;
    const count = formatInteger(item.requests);
    svg.append(
      s('text', { x: left - 8, y: y + row / 2 + 4, 'text-anchor': 'end' }, item.label),
      s('rect', { x: left, y: y + 4, width: Math.max(1, xOf(item.requests) - left),
        height: row - 8, fill: REJECTION_COLOR, 'data-reason': item.key,
        'data-value': item.requests }, s('title', {}, `${item.label}: ${count}`)),
      s('text', { class: 'value-label', x: xOf(item.requests) + 6, y: y + row / 2 + 4 }, count));
  });
  svg.append(s('line', { class: 'axis', x1: left, x2: left, y1: top, y2: bottom }),
    s('text', { class: 'axis-label', x: (left + right) / 2, y: bottom + 34,
      'text-anchor': 'middle' }, 'Requests'));
  return svg;
}
