// Building HTML and SVG nodes. Data only ever reaches the page through these, as text nodes
// and attribute values: never as markup, so a subscription id cannot inject anything.

const SVG_NS = 'http://www.w3.org/2000/svg';

function setAttributes(node, attributes) {
  for (const [name, value] of Object.entries(attributes)) {
    if (value !== undefined && value !== null) node.setAttribute(name, String(value));
  }
  return node;
}

export function h(tag, attributes = {}, ...children) {
  const node = setAttributes(document.createElement(tag), attributes);
  node.append(...children);
  return node;
}

export function s(tag, attributes = {}, ...children) {
  const node = setAttributes(document.createElementNS(SVG_NS, tag), attributes);
  node.append(...children);
  return node;
}

const integers = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });

export function formatInteger(value) {
  return integers.format(value);
}

// Costs stay the exact decimal text the API sends (summing floats would round them); only
// digit groups are added.
export function formatCost(text) {
  const [whole, fraction] = String(text).split('.');
  const grouped = whole.replace(/\B(?=(\d{3})+(?!\d))/g, ',');
  return fraction === undefined ? grouped : `${grouped}.${fraction}`;
}
