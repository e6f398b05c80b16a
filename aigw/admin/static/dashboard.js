// The usage dashboard: asks for the admin token, reads /usage/report with it and shows totals,
// charts and tables. No library and no network beyond the admin listener: the gateway may run
// offline. `body[data-state]` says where the page is (login, loading, ready, empty, error,
// unauthorized), for people and for the end-to-end test.

import { reasonBars, stackedBars } from './charts.js';
import { formatCost, formatInteger, h } from './dom.js';
import { consumersOf, labelOf, rejectionsOf, sumTotals, timeSeries } from './report.js';

const TOKEN_KEY = 'aigw.admin-token';
const DAY_MS = 86400000;
const MAX_DAYS = 366; // the report refuses spans over 400 days
const MAX_CONSUMERS = 25;
const DIMENSIONS = ['subscription', 'product', 'model'];

const $ = (id) => document.getElementById(id);

let generation = 0; // answers to an older refresh are dropped
let memoryToken = null; // when sessionStorage is unavailable

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// --- the token: this tab's session storage, never a URL ------------------------------------

function token() {
  try {
    return sessionStorage.getItem(TOKEN_KEY) || memoryToken;
  } catch {
    return memoryToken;
  }
}

function keepToken(value) {
  memoryToken = value;
  try {
    if (value === null) sessionStorage.removeItem(TOKEN_KEY);
    else sessionStorage.setItem(TOKEN_KEY, value);
  } catch {
    // Storage disabled: the token lives as long as this page.
  }
}

// --- dates (all UTC) -------------------------------------------------------------------------

function utcDay(time) {
  return new Date(time).toISOString().slice(0, 10);
}

function parseDay(text) {
  return /^\d{4}-\d{2}-\d{2}$/.test(text) ? Date.parse(`${text}T00:00:00Z`) : NaN;
}

function setDefaultRange() {
  const today = parseDay(utcDay(Date.now()));
  $('from').value = utcDay(today - 6 * DAY_MS);
  $('to').value = utcDay(today);
}

// The chosen days, both included: the report's `to` is the midnight after the last one.
function readRange() {
  const first = parseDay($('from').value);
  const last = parseDay($('to').value);
  if (Number.isNaN(first) || Number.isNaN(last)) {
    throw new ApiError(0, 'Choose a start and an end date.');
  }
  if (last < first) throw new ApiError(0, 'The end date is before the start date.');
  if ((last - first) / DAY_MS + 1 > MAX_DAYS) {
    throw new ApiError(0, `Choose at most ${MAX_DAYS} days.`);
  }
  const days = [];
  for (let time = first; time <= last; time += DAY_MS) days.push(utcDay(time));
  return { from: `${days[0]}T00:00:00Z`, to: `${utcDay(last + DAY_MS)}T00:00:00Z`, days };
}

// --- the admin API ---------------------------------------------------------------------------

async function report(range, groupBy) {
  const query = new URLSearchParams(
    { from: range.from, to: range.to, 'group-by': groupBy, format: 'json' });
  let response;
  try {
    // Relative, so the page also works behind a proxy that mounts the admin API on a prefix.
    response = await fetch(`usage/report?${query}`, {
      headers: { Authorization: `Bearer ${token()}`, Accept: 'application/json' },
      cache: 'no-store',
      credentials: 'omit',
    });
  } catch (error) {
    throw new ApiError(0, `The admin API cannot be reached (${error.message}).`);
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!response.ok) {
    const message = typeof body?.message === 'string' ? body.message : response.statusText;
    throw new ApiError(response.status, `${response.status}: ${message}`);
  }
  if (!Array.isArray(body?.rows) || !Array.isArray(body?.totals)) {
    throw new ApiError(response.status, 'The admin API sent an unexpected usage report.');
  }
  return body;
}

// --- page states -----------------------------------------------------------------------------

function setState(state) {
  document.body.dataset.state = state;
}

function showError(message) {
  $('error').textContent = message;
  $('error').hidden = false;
}

function clearError() {
  $('error').textContent = '';
  $('error').hidden = true;
}

function showLogin() {
  $('login').hidden = false;
  $('range-form').hidden = true;
  $('report').hidden = true;
  $('status').textContent = '';
  setState('login');
  $('token').focus();
}

async function refresh() {
  const mine = ++generation;
  clearError();
  if (!token()) {
    showLogin();
    return;
  }
  $('login').hidden = true;
  $('range-form').hidden = false;
  let range;
  try {
    range = readRange();
  } catch (error) {
    showError(error.message);
    setState('error');
    return;
  }
  const chosen = $('dimension').value;
  const dimension = DIMENSIONS.includes(chosen) ? chosen : DIMENSIONS[0];
  setState('loading');
  $('status').textContent = 'Loading…';
  try {
    const [bySubscription, byDay, byReason] = await Promise.all([
      report(range, 'subscription'),
      report(range, `day,${dimension}`),
      report(range, 'reason'),
    ]);
    if (mine !== generation) return;
    render(range, dimension, bySubscription, byDay, byReason);
  } catch (error) {
    if (mine !== generation) return;
    $('status').textContent = '';
    $('report').hidden = true;
    if (error.status === 401) {
      keepToken(null); // a wrong or rotated token: ask again
      showLogin();
    }
    showError(error.message || String(error));
    setState(error.status === 401 ? 'unauthorized' : 'error');
  }
}

function render(range, dimension, bySubscription, byDay, byReason) {
  const totals = sumTotals(bySubscription.totals);
  const empty = totals.requests === 0;
  $('report').hidden = false;
  $('empty').hidden = !empty;
  $('data').hidden = empty;
  if (!empty) {
    const rejections = rejectionsOf(byReason.rows);
    renderTotals(totals, rejections);
    const series = timeSeries(byDay.rows, dimension, range.days);
    $('tokens-chart').replaceChildren(tokensChart(series, range.days, dimension));
    $('cost-charts').replaceChildren(...costCharts(series, range.days, totals.currencies));
    $('cost-by').textContent = `(by ${dimension})`;
    renderConsumers(consumersOf(bySubscription.rows, totals.currencies), totals.currencies);
    renderRejections(rejections);
  }
  const last = range.days[range.days.length - 1];
  const time = new Date().toISOString().slice(11, 19);
  $('status').textContent = `${range.days[0]} to ${last} (UTC), updated at ${time} UTC`;
  setState(empty ? 'empty' : 'ready');
}

// --- sections --------------------------------------------------------------------------------

function card(label, value, testid, detail) {
  const node = h('div', { class: 'card' }, h('div', { class: 'label' }, label),
    h('div', { class: 'value', 'data-testid': testid }, value));
  if (detail) node.append(h('div', { class: 'detail' }, ...detail));
  return node;
}

function renderTotals(totals, rejections) {
  const rejected = rejections.reduce((sum, item) => sum + item.requests, 0);
  const number = (testid, value) => h('span', { 'data-testid': testid }, formatInteger(value));
  const cards = [
    card('Requests', formatInteger(totals.requests), 'total-requests',
      ['errors ', number('total-errors', totals.errors)]),
    card('Rejected', formatInteger(rejected), 'total-rejections', ['requests with a reason']),
    card('Total tokens', formatInteger(totals.total_tokens), 'total-tokens', [
      'prompt ', number('total-prompt-tokens', totals.prompt_tokens),
      ' · completion ', number('total-completion-tokens', totals.completion_tokens),
    ]),
  ];
  for (const currency of totals.currencies) {
    const cost = formatCost(totals.costs.get(currency));
    cards.push(card(`Cost (${currency})`, cost, `total-cost-${currency}`));
  }
  if (totals.currencies.length === 0) {
    cards.push(card('Cost', '—', 'total-cost-none', ['no prices configured for these models']));
  }
  $('totals').replaceChildren(...cards);
}

function tokensChart(series, days, dimension) {
  return stackedBars({
    name: 'tokens',
    title: `Total tokens per day by ${dimension}`,
    days,
    series: series.map((entry) => ({ ...entry, values: entry.tokens })),
    yLabel: 'Tokens',
    wholeNumbers: true,
    format: formatInteger,
  });
}

function costCharts(series, days, currencies) {
  if (currencies.length === 0) {
    return [h('p', { class: 'muted', 'data-testid': 'no-cost' },
      'No priced usage in this period: prices are set per model in usage.prices.')];
  }
  const charts = [];
  for (const currency of currencies) {
    const priced = series.filter((entry) => entry.costs.has(currency));
    if (currencies.length > 1) charts.push(h('div', { class: 'chart-title' }, currency));
    charts.push(stackedBars({
      name: `cost-${currency}`,
      title: `Cost per day (${currency})`,
      days,
      series: priced.map((entry) => ({ ...entry, values: entry.costs.get(currency) })),
      yLabel: `Cost (${currency})`,
      wholeNumbers: false,
      format: (value) => `${Number(value.toPrecision(6))} ${currency}`,
    }));
  }
  return charts;
}

function table(node, headings, rows) {
  node.replaceChildren(
    h('thead', {}, h('tr', {}, ...headings.map((text) => h('th', { scope: 'col' }, text)))),
    h('tbody', {}, ...rows));
}

function renderConsumers(ranked, currencies) {
  const shown = ranked.slice(0, MAX_CONSUMERS);
  const headings = ['Subscription', 'Requests', 'Errors', 'Prompt tokens', 'Completion tokens',
    'Total tokens', ...currencies.map((currency) => `Cost (${currency})`)];
  const cell = (field, text) => h('td', { 'data-field': field }, text);
  const costs = (entry) => currencies.map((currency) => cell(`cost-${currency}`,
    entry.costs.has(currency) ? formatCost(entry.costs.get(currency)) : '—'));
  table($('consumers'), headings, shown.map((entry) => h('tr', { 'data-subscription': entry.key },
    h('td', {}, labelOf(entry.key, 'subscription')),
    cell('requests', formatInteger(entry.requests)),
    cell('errors', formatInteger(entry.errors)),
    cell('prompt_tokens', formatInteger(entry.prompt_tokens)),
    cell('completion_tokens', formatInteger(entry.completion_tokens)),
    cell('total_tokens', formatInteger(entry.total_tokens)),
    ...costs(entry))));
  const more = ranked.length - shown.length;
  $('consumers-more').hidden = more <= 0;
  $('consumers-more').textContent = more > 0 ? `${more} more not shown.` : '';
}

function renderRejections(items) {
  $('no-rejections').hidden = items.length > 0;
  $('rejections-chart').replaceChildren(...(items.length > 0 ? [reasonBars(items)] : []));
  const total = items.reduce((sum, item) => sum + item.requests, 0);
  table($('rejections'), items.length > 0 ? ['Reason', 'Requests', 'Share'] : [],
    items.map((item) => h('tr', { 'data-reason': item.key },
      h('td', {}, item.label),
      h('td', { 'data-field': 'requests' }, formatInteger(item.requests)),
      h('td', { 'data-field': 'share' }, `${((100 * item.requests) / total).toFixed(1)} %`))));
}

// --- start (a module script runs once the document is parsed) --------------------------------

setDefaultRange();
$('token-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const value = $('token').value.trim();
  $('token').value = '';
  if (!value) {
    showError('Enter the admin token.');
    return;
  }
  keepToken(value);
  refresh();
});
$('range-form').addEventListener('submit', (event) => {
  event.preventDefault();
  refresh();
});
$('dimension').addEventListener('change', () => refresh());
$('forget').addEventListener('click', () => {
  generation += 1;
  keepToken(null);
  clearError();
  showLogin();
});
refresh();
