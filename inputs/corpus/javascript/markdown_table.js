#!/usr/bin/env node
/**
 * markdown_table.js - format, parse and re-align GitHub-flavoured Markdown tables.
 *
 * formatTable(rows, options) turns an array of objects (or arrays) into an aligned table;
 * parseTable(text) reads one back, honouring escaped pipes and the alignment row; realign(text)
 * rewrites every table in a Markdown document with padded columns, leaving everything else alone.
 * Column widths count user-perceived characters, so accented letters do not break alignment.
 *
 * Command line:  node markdown_table.js README.md > README.aligned.md
 * Self-test:     node markdown_table.js --test
 */
'use strict';

const fs = require('fs');
const assert = require('assert');

const ALIGN_MARKERS = { left: ':---', right: '---:', center: ':---:', none: '---' };

/** Display width of a string: code points, minus combining marks. */
function displayWidth(text) {
  let width = 0;
  for (const ch of String(text).normalize('NFC')) {
    if (/\p{M}/u.test(ch)) continue;
    width += 1;
  }
  return width;
}

function escapeCell(value) {
  if (value === null || value === undefined) return '';
  return String(value).replace(/\|/g, '\\|').replace(/\r?\n/g, '<br>');
}

function pad(text, width, align) {
  const gap = width - displayWidth(text);
  if (gap <= 0) return text;
  if (align === 'right') return ' '.repeat(gap) + text;
  if (align === 'center') {
    const left = Math.floor(gap / 2);
    return ' '.repeat(left) + text + ' '.repeat(gap - left);
  }
  return text + ' '.repeat(gap);
}

/**
 * Formats rows as a Markdown table.
 * @param {Array<Object|Array>} rows   objects (keys become columns) or arrays (first row = header)
 * @param {{columns?: string[], align?: Object<string,string>, numbersRight?: boolean}} options
 *        align values: 'left', 'right', 'center' or 'none' (no marker; rendered left-aligned)
 */
function formatTable(rows, options = {}) {
  if (!Array.isArray(rows) || rows.length === 0) throw new TypeError('formatTable needs a non-empty array');
  let header;
  let body;
  if (Array.isArray(rows[0])) {
    header = rows[0].map(String);
    body = rows.slice(1);
  } else {
    header = options.columns || [...new Set(rows.flatMap((r) => Object.keys(r)))];
    body = rows.map((r) => header.map((c) => r[c]));
  }
  const cells = body.map((r) => header.map((_, i) => escapeCell(r[i])));
  const align = header.map((name, i) => {
    if (options.align && options.align[name]) return options.align[name];
    const numeric = body.length > 0 && body.every((r) => r[i] === undefined || r[i] === '' || !isNaN(Number(r[i])));
    return options.numbersRight !== false && numeric ? 'right' : 'none';
  });
  const widths = header.map((h, i) => Math.max(3, displayWidth(escapeCell(h)), ...cells.map((r) => displayWidth(r[i]))));
  const line = (values) => '| ' + values.map((v, i) => pad(v, widths[i], align[i])).join(' | ') + ' |';
  const rule = '| ' + widths.map((w, i) => alignRule(w, align[i])).join(' | ') + ' |';
  return [line(header.map(escapeCell)), rule, ...cells.map(line)].join('\n');
}

function alignRule(width, align) {
  const marker = ALIGN_MARKERS[align] || ALIGN_MARKERS.none;
  const dashes = '-'.repeat(Math.max(3, width - (marker.startsWith(':') ? 1 : 0) - (marker.endsWith(':') ? 1 : 0)));
  return (marker.startsWith(':') ? ':' : '') + dashes + (marker.endsWith(':') ? ':' : '');
}

/** Splits one table line into cells, honouring backslash-escaped pipes. */
function splitRow(line) {
  let s = line.trim();
  if (s.startsWith('|')) s = s.slice(1);
  if (s.endsWith('|') && !s.endsWith('\\|')) s = s.slice(0, -1);
  const cells = [];
  let current = '';
  for (let i = 0; i < s.length; i++) {
    if (s[i] === '\\' && s[i + 1] === '|') {
      current += '\\|';
      i++;
    } else if (s[i] === '|') {
      cells.push(current.trim());
      current = '';
    } else {
      current += s[i];
    }
  }
  cells.push(current.trim());
  return cells;
}

function parseAlignment(cell) {
  const c = cell.trim();
  if (!/^:?-{1,}:?$/.test(c)) return null;
  if (c.startsWith(':') && c.endsWith(':')) return 'center';
  if (c.endsWith(':')) return 'right';
  if (c.startsWith(':')) return 'left';
  return 'none';
}

function isTableStart(lines, i) {
  if (i + 1 >= lines.length || !lines[i].includes('|')) return false;
  const rule = splitRow(lines[i + 1]);
  return rule.length > 0 && rule.every((c) => parseAlignment(c) !== null);
}

/** Parses the first table in `text` into {header, align, rows}; rows are arrays of strings. */
function parseTable(text) {
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    if (!isTableStart(lines, i)) continue;
    const header = splitRow(lines[i]);
    const align = splitRow(lines[i + 1]).map(parseAlignment);
    const rows = [];
    for (let j = i + 2; j < lines.length && lines[j].includes('|'); j++) {
      const r = splitRow(lines[j]);
      while (r.length < header.length) r.push('');
      rows.push(r.slice(0, header.length));
    }
    return { header, align, rows };
  }
  return null;
}

/** Re-aligns every table in a Markdown document; code fences are left untouched. */
function realign(text) {
  const lines = text.split('\n');
  const out = [];
  let inFence = false;
  for (let i = 0; i < lines.length; i++) {
    if (/^\s*(```|~~~)/.test(lines[i])) inFence = !inFence;
    if (inFence || !isTableStart(lines, i)) {
      out.push(lines[i]);
      continue;
    }
    let end = i + 2;
    while (end < lines.length && lines[end].includes('|') && lines[end].trim() !== '') end++;
    const table = parseTable(lines.slice(i, end).join('\n'));
    const alignByName = {};
    table.header.forEach((h, k) => {
      alignByName[h] = table.align[k];
    });
    const unescaped = table.rows.map((r) => r.map((c) => c.replace(/\\\|/g, '|')));
    out.push(formatTable([table.header, ...unescaped], { align: alignByName }));
    i = end - 1;
  }
  return out.join('\n');
}

function selfTest() {
  const t = formatTable([
    { name: 'lora', rank: 16, params: 4194304 },
    { name: 'bottleneck', rank: 64, params: 1048576 },
  ]);
  assert.strictEqual(
    t,
    [
      '| name       | rank |  params |',
      '| ---------- | ---: | ------: |',
      '| lora       |   16 | 4194304 |',
      '| bottleneck |   64 | 1048576 |',
    ].join('\n'),
  );
  const parsed = parseTable(t);
  assert.deepStrictEqual(parsed.header, ['name', 'rank', 'params']);
  assert.deepStrictEqual(parsed.align, ['none', 'right', 'right']);
  assert.deepStrictEqual(parsed.rows[1], ['bottleneck', '64', '1048576']);

  const escaped = formatTable([['expr', 'meaning'], ['a | b', 'bitwise or']]);
  assert.ok(escaped.includes('a \\| b'));
  assert.deepStrictEqual(parseTable(escaped).rows[0], ['a \\| b', 'bitwise or']);

  const doc = ['# Results', '', '|x|y|', '|:-:|-|', '|1|café|', '', '```', '|not|a|', '|---|---|', '```'].join('\n');
  const fixed = realign(doc);
  assert.ok(fixed.includes('|  x  | y    |'), fixed);
  assert.ok(fixed.includes('|  1  | café |'), fixed);
  assert.ok(fixed.includes('|not|a|'), 'tables inside code fences stay as they are');
  assert.strictEqual(displayWidth('e\u0301'), 1);
  console.log('markdown_table: all tests passed');
}

if (require.main === module) {
  const args = process.argv.slice(2);
  if (args[0] === '--test') {
    selfTest();
  } else if (args.length === 1) {
    process.stdout.write(realign(fs.readFileSync(args[0], 'utf8')));
  } else {
    console.error('usage: node markdown_table.js FILE.md | --test');
    process.exit(2);
  }
}

module.exports = { formatTable, parseTable, realign, displayWidth };
