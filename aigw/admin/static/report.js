// Shaping /usage/report answers for the page. The report splits every row by currency (null:
// unpriced), so token counts are summed across currencies and costs kept per currency.

const COUNTS = ['requests', 'errors', 'prompt_tokens', 'completion_tokens', 'total_tokens'];
// More keys than this are summed into one "others" series, so the colours stay apart.
const MAX_SERIES = 8;
const PALETTE = ['#4e79a7', '#f28e2b', '#59a14f', '#e15759', '#76b7b2', '#edc948', '#b07aa1',
  '#ff9da7', '#9c755f'];
const OTHERS = { key: '*others*', color: '#bab0ac' };
const NONE_LABEL = {
  subscription: '(no subscription)',
  product: '(no product)',
  model: '(no model)',
};

export function keyOf(value) {
  return value === null || value === undefined ? '' : String(value);
}

export function labelOf(key, dimension) {
  if (key === '') return NONE_LABEL[dimension] || '(none)';
  return key.length > 40 ? `${key.slice(0, 39)}…` : key;
}

function hasCost(row) {
  return Boolean(row.currency) && row.cost !== null && row.cost !== undefined;
}

function zeros(count) {
  return new Array(count).fill(0);
}

function addCounts(into, row) {
  for (const field of COUNTS) into[field] += Number(row[field] || 0);
}

function emptyCounts() {
  return Object.fromEntries(COUNTS.map((field) => [field, 0]));
}

// Counts over every currency, the cost text per currency, and the currencies in order: the
// most used first (costs in different currencies do not add up; that one ranks consumers).
export function sumTotals(entries) {
  const totals = { ...emptyCounts(), costs: new Map() };
  const used = new Map();
  for (const entry of entries) {
    addCounts(totals, entry);
    if (hasCost(entry)) {
      totals.costs.set(entry.currency, entry.cost);
      used.set(entry.currency, Number(entry.requests || 0));
    }
  }
  totals.currencies = [...totals.costs.keys()]
    .sort((a, b) => used.get(b) - used.get(a) || a.localeCompare(b));
  return totals;
}

// One series per key of the dimension (by tokens, biggest first): tokens per day and cost per
// day per currency, with a colour that stays the same in every chart.
export function timeSeries(rows, dimension, days) {
  const index = new Map(days.map((day, i) => [day, i]));
  const byKey = new Map();
  for (const row of rows) {
    const i = index.get(row.day);
    if (i === undefined) continue;
    const key = keyOf(row[dimension]);
    if (!byKey.has(key)) {
      byKey.set(key, { key, label: labelOf(key, dimension), tokens: zeros(days.length),
        costs: new Map(), sum: 0, requests: 0 });
    }
    const entry = byKey.get(key);
    entry.tokens[i] += Number(row.total_tokens || 0);
    entry.sum += Number(row.total_tokens || 0);
    entry.requests += Number(row.requests || 0);
    if (hasCost(row)) {
      if (!entry.costs.has(row.currency)) entry.costs.set(row.currency, zeros(days.length));
      entry.costs.get(row.currency)[i] += Number(row.cost);
    }
  }
  const ranked = [...byKey.values()]
    .sort((a, b) => b.sum - a.sum || b.requests - a.requests || a.key.localeCompare(b.key));
  const kept = ranked.length > MAX_SERIES + 1 ? ranked.slice(0, MAX_SERIES) : ranked;
  kept.forEach((entry, i) => { entry.color = PALETTE[i % PALETTE.length]; });
  const rest = ranked.slice(kept.length);
  if (rest.length > 0) kept.push(merged(rest, days.length));
  return kept;
}

function merged(entries, length) {
  const others = { ...OTHERS, label: `${entries.length} others`, tokens: zeros(length),
    costs: new Map() };
  for (const entry of entries) {
    entry.tokens.forEach((value, i) => { others.tokens[i] += value; });
    for (const [currency, values] of entry.costs) {
      if (!others.costs.has(currency)) others.costs.set(currency, zeros(length));
      values.forEach((value, i) => { others.costs.get(currency)[i] += value; });
    }
  }
  return others;
}

// One entry per subscription, ranked by cost in each currency in turn, then by tokens.
export function consumersOf(rows, currencies) {
  const bySubscription = new Map();
  for (const row of rows) {
    const key = keyOf(row.subscription);
    if (!bySubscription.has(key)) {
      bySubscription.set(key, { key, ...emptyCounts(), costs: new Map() });
    }
    const entry = bySubscription.get(key);
    addCounts(entry, row);
    if (hasCost(row)) entry.costs.set(row.currency, row.cost);
  }
  const cost = (entry, currency) => Number(entry.costs.get(currency) || 0);
  return [...bySubscription.values()].sort((a, b) => {
    for (const currency of currencies) {
      const difference = cost(b, currency) - cost(a, currency);
      if (difference !== 0) return difference;
    }
    return b.total_tokens - a.total_tokens || a.key.localeCompare(b.key);
  });
}

// Rejected requests are the ledger's rows with a reason (TokenLimitExceeded, …), most first.
export function rejectionsOf(rows) {
  const byReason = new Map();
  for (const row of rows) {
    if (row.reason === null || row.reason === undefined) continue;
    const key = String(row.reason);
    byReason.set(key, (byReason.get(key) || 0) + Number(row.requests || 0));
  }
  return [...byReason]
    .map(([key, requests]) => ({ key, label: labelOf(key, 'reason'), requests }))
    .filter((item) => item.requests > 0)
    .sort((a, b) => b.requests - a.requests || a.key.localeCompare(b.key));
}
