#!/usr/bin/env bash
# make-tok-fixtures.sh - write the tokenizer fixtures: test texts and the ids
# that the reference tokenizer (js-tiktoken 1.0.21, "gpt2" encoding,
# encode_ordinary semantics: no special tokens) gives for them.
#
#   tools/make-tok-fixtures.sh [OUTDIR]          (default tests/fixtures/tok)
#
# Needs node and npm (js-tiktoken is installed into a temporary directory
# unless NODE_PATH already provides it) and zstd (for a sample of
# data/sample/val.txt.zst). Output, all generated here, never by hand:
#   GROUP.jsonl  one case per line: {"text": STRING, "ids": [ID, ...]}
#                groups: contractions numbers whitespace scripts emoji
#                combining longest punctuation special prose fuzz
#   docs.txt     the non-empty cases of the groups but fuzz and longest, each preceded by the
#                literal <|endoftext|> (the record's text format)
#   docs.jsonl   the same documents as {"text": ...} lines
#   docs.ids     reference ids of docs.txt split on <|endoftext|> (each
#                document as [50256] + encode_ordinary(doc)), one per line
#
# Two characters are left out on purpose: JavaScript's \s matches U+FEFF
# and not U+0085, while tiktoken's Rust regex (and lib/bpe) use Unicode
# White_Space, which is the other way round. Characters assigned after
# Unicode 15.0 (lib/unicode_tables.h) are left out too (node has newer
# tables). The unit tests check U+0085 and U+FEFF separately.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$top/tests/fixtures/tok}
mkdir -p "$out"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if ! node -e 'require("js-tiktoken/lite")' 2>/dev/null; then
	(cd "$tmp" && npm init -y >/dev/null && npm install --silent js-tiktoken@1.0.21 >/dev/null)
	export NODE_PATH="$tmp/node_modules"
fi
zstd -qdc "$top/data/sample/val.txt.zst" >"$tmp/prose.txt"

node - "$out" "$top/data/gpt2/encoder.json" "$tmp/prose.txt" <<'EOF'
'use strict';
const fs = require('fs');
const path = require('path');
const { Tiktoken } = require('js-tiktoken/lite');
let gpt2 = require('js-tiktoken/ranks/gpt2');
gpt2 = gpt2.default || gpt2;
const enc = new Tiktoken(gpt2);
const [outDir, encoderPath, prosePath] = process.argv.slice(2);
const ordinary = (s) => enc.encode(s, [], []);

let seed = 20250104;
function rand() { // mulberry32
  seed = (seed + 0x6d2b79f5) | 0;
  let t = seed;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const pick = (a) => a[Math.floor(rand() * a.length)];

const groups = {};
function add(group, text) { (groups[group] = groups[group] || []).push(text); }

// contractions: every suffix in every upper/lower case variant, in context
const sfx = ['s', 'd', 'm', 't', 'll', 've', 're'];
function variants(s) {
  let v = [''];
  for (const ch of s) v = v.flatMap((p) => [p + ch.toLowerCase(), p + ch.toUpperCase()]);
  return v;
}
for (const s of sfx)
  for (const v of variants(s)) {
    add('contractions', `it'${v} we'${v} I'${v}`);
    add('contractions', `'${v}`);
    add('contractions', `x'${v}y '${v} ''${v} '${v}' '${v}1 '${v}\n`);
  }
for (const t of ["don't", "DON'T", "can't've", "y'all'd've", "rock 'n' roll", "'tis", "o'clock",
  "the '90s", "'s'", "''", "'", "' s", "it\u2019s", "it`s", " 're", "\t'll", "1's", "\u00e9't",
  "'sss", "'lll", "'vee", "'rere", "'L", "'V", "'R", "Li'l'", "'m'm'm", "'ll've're'd"])
  add('contractions', t);

// numbers
for (const t of ['0', '7', '42', ' 42', '  42', '3.14159', '1,000,000', '2024-01-04', '10:30pm',
  '1e-9', '-17', '+5', '0x1F', '007', 'abc123def', 'A1B2C3', '1st 2nd 3rd 4th',
  '\u0663\u0664\u0665', ' \u0968\u0966\u0968\u096a', '\uff11\uff12\uff13', 'x\u00b2 + y\u00b3',
  '\u00bd \u00bc \u00be', '\u216b \u2160\u2161', '\u2460\u2461', '12\u00a0345', '3\u20094',
  '9'.repeat(130), '1234567890'.repeat(9), ' ' + '5'.repeat(70), '3.' + '14159265358979'.repeat(5)])
  add('numbers', t);

// whitespace runs
const ws = [' ', '  ', '   ', '\t', '\t\t', '\n', '\n\n', '\n\n\n', '\r\n', '\r\n\r\n', ' \n', '\n ',
  ' \t ', '\u00a0', '\u3000', '\u2003', '\u2028', '\u2029', '\u1680', '\u202f', '\u205f', '\u000b',
  '\u000c', '\u200a', '\u00a0 ', ' \u00a0', '\u3000\u3000'];
for (const w of ws) {
  add('whitespace', `a${w}b`);
  add('whitespace', `a${w}`);
  add('whitespace', `${w}a`);
  add('whitespace', w);
  add('whitespace', `x.${w}1${w}'s${w}\u4e2d`);
}
for (const t of ['    indented code\n        more\n', 'line  \nnext\t\n', 'trailing   ', 'trailing\n\n\n',
  ' ', '  ', '\n', ' \n \n ', 'a \n b', 'a  b   c    d', '\tx\n\ty', 'end.  ', 'para one.\n\nPara two.\n',
  'spaces' + ' '.repeat(70) + 'here', ' '.repeat(300), '\n'.repeat(65), 'x' + ' \t'.repeat(40) + 'y'])
  add('whitespace', t);

// non-Latin scripts
for (const t of ['\u4e2d\u6587\u5206\u8bcd\u6d4b\u8bd5\u3002\u6211\u4eec\u5728\u8fd9\u91cc\u3002',
  '\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8\u3001\u30ab\u30bf\u30ab\u30ca\u3068\u3072\u3089\u304c\u306a\u3002',
  '\ud55c\uad6d\uc5b4 \ubb38\uc7a5\uc785\ub2c8\ub2e4.', '\u0627\u0644\u0639\u0631\u0628\u064a\u0629 \u0644\u063a\u0629 \u062c\u0645\u064a\u0644\u0629\u060c \u0645\u0631\u062d\u0628\u0627!',
  '\u0939\u093f\u0928\u094d\u0926\u0940 \u092d\u093e\u0937\u093e \u092e\u0947\u0902 \u0932\u093f\u0916\u093e \u0917\u092f\u093e \u0935\u093e\u0915\u094d\u092f\u0964',
  '\u0420\u0443\u0441\u0441\u043a\u0438\u0439 \u0442\u0435\u043a\u0441\u0442, \u041f\u0440\u0438\u0432\u0435\u0442 \u043c\u0438\u0440!',
  '\u0395\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac: \u03ba\u03b1\u03bb\u03b7\u03bc\u03ad\u03c1\u03b1 \u03ba\u03cc\u03c3\u03bc\u03b5.',
  '\u05e2\u05d1\u05e8\u05d9\u05ea \u05de\u05d9\u05de\u05d9\u05df \u05dc\u05e9\u05de\u05d0\u05dc.', '\u0e20\u0e32\u0e29\u0e32\u0e44\u0e17\u0e22\u0e44\u0e21\u0e48\u0e21\u0e35\u0e0a\u0e48\u0e2d\u0e07\u0e27\u0e48\u0e32\u0e07',
  '\u10e5\u10d0\u10e0\u10d7\u10e3\u10da\u10d8 \u0540\u0561\u0575\u0565\u0580\u0565\u0576', '\u1200\u121b\u122d\u129b \u0ba4\u0bae\u0bbf\u0bb4\u0bcd',
  'Stra\u00dfe \u00c5ngstr\u00f6m na\u00efve caf\u00e9 \u0141\u00f3d\u017a \u0130stanbul',
  'mixed\u4e2d\u6587English\u0627\u0644\u0639\u0631\u0628\u064a\u0629123', '\ud840\udc0b\ud840\udc89 (CJK Ext B)', '\ud835\udc00\ud835\udc01\ud835\udfce (math alnum)'])
  add('scripts', t);

// emoji, ZWJ sequences, modifiers, flags, keycaps, variation selectors
for (const t of ['\ud83d\ude00', ' \ud83d\ude00\ud83d\ude03', 'hi\ud83d\udc4b there', '\ud83d\udc68\u200d\ud83d\udc69\u200d\ud83d\udc67\u200d\ud83d\udc66',
  '\ud83d\udc4d\ud83c\udffd', '\ud83c\uddeb\ud83c\uddf7\ud83c\uddef\ud83c\uddf5', '1\ufe0f\u20e3 #\ufe0f\u20e3', '\u2764\ufe0f \u2764',
  '\ud83c\udff3\ufe0f\u200d\ud83c\udf08', '\ud83e\uddd1\ud83c\udffe\u200d\ud83d\udcbb', 'a\u200db', '\u200d', ' \ud83d\ude80\ud83d\ude80\ud83d\ude80.',
  '\u2615\u26a1\u2728', '\ud83d\ude02'.repeat(30)])
  add('emoji', t);

// combining marks
for (const t of ['e\u0301', 'cafe\u0301', ' e\u0301t\u00e9', 'a\u0300\u0301\u0302\u0303\u0304', 'Z\u0351\u036b\u0343\u036a\u0302\u036b\u033d\u034f\u0334\u0319\u0324\u031e\u0349\u035a\u032f\u031e\u0320\u034dA\u036b\u0357\u0334\u0362\u0335\u031c\u0330\u0354L\u0368\u0367\u0369\u0358\u0320G\u0311\u0357\u030e\u0305\u035b\u0341\u0334\u033b\u0348\u034d\u0354\u0339O\u0342\u030c\u030c\u0358\u0328\u0335\u0339\u033b\u031d\u0333',
  '\u0301', ' \u0301', '1\u0301', '.\u0301', '\u0915\u094d\u0937', 'n\u0303o\u0308', '\u1100\u1161\u11a8', '\u05e9\u05c1\u05b8\u05dc\u05d5\u05b9\u05dd'])
  add('combining', t);

// the longest tokens of the vocabulary, alone and in context
{
  const encoder = JSON.parse(fs.readFileSync(encoderPath, 'utf8'));
  const bs = [];
  for (let b = 33; b <= 126; b++) bs.push(b);
  for (let b = 161; b <= 172; b++) bs.push(b);
  for (let b = 174; b <= 255; b++) bs.push(b);
  const cs = bs.slice();
  let n = 0;
  for (let b = 0; b < 256; b++) if (!bs.includes(b)) { bs.push(b); cs.push(256 + n++); }
  const dec = new Map(cs.map((c, i) => [String.fromCharCode(c), bs[i]]));
  const toks = [];
  for (const k of Object.keys(encoder)) {
    if (k === '<|endoftext|>') continue;
    const bytes = Buffer.from([...k].map((ch) => dec.get(ch)));
    const s = bytes.toString('utf8');
    if (Buffer.from(s, 'utf8').equals(bytes) && !/[\ufeff\u0085]/.test(s)) toks.push(s);
  }
  toks.sort((a, b) => Buffer.byteLength(b) - Buffer.byteLength(a) || (a < b ? -1 : 1));
  for (const s of toks.slice(0, 40)) {
    add('longest', s);
    add('longest', `x ${s}, ${s}${s}!`);
  }
}

// punctuation runs
for (const t of ['...', '!!!???', ' --- ', '\u2014\u2014', '\u201cquoted\u201d', '"double" \'single\'', '(a) [b] {c} <d>',
  'https://example.com/path?q=1&r=2#frag', 'user@example.org', 'C:\\Windows\\System32', '#include <stdio.h>\nint main(void) { return 0; }\n',
  '**bold** _it_ `code`', '$$x^2$$', '<|endoftext|>', '<|endoftext', 'a<|endoftext|>b', '}}}}', ' .,;:', '.' + '!'.repeat(80),
  '-'.repeat(64), '='.repeat(33), '\u00a7\u00b6\u2020\u2021', '\u00bf\u00a1Qu\u00e9?!', '\u3001\u3002\u300c\u300d', '\u2026 \u2022 \u00b7', '~!@#$%^&*()_+'])
  add('punctuation', t);

// controls, NUL, replacement and private-use characters, specials as text
for (const t of ['\u0000', 'a\u0000b', ' \u0000', '\u0000\u0000 x', '\u0001\u0002\u001b[0m', '\u007f', '\u0080\u009f',
  '\u001c\u001d\u001e\u001f', 'a\u001fb', '\ufffd', 'bad \ufffd\ufffd bytes', '\ue000\uf8ff', '\udb80\udc00',
  '\u200b', 'zero\u200bwidth', '\u00ad', '\u180e', '<|endoftext|><|endoftext|>', ' <|endoftext|> '])
  add('special', t);

// prose: paragraphs of the shipped sample text
{
  const text = fs.readFileSync(prosePath, 'utf8').slice(0, 12000);
  const paras = text.slice(0, text.lastIndexOf('\n\n')).split(/\n\n/).filter((p) => p.trim().length);
  for (const p of paras.slice(0, 20)) add('prose', p.replace('<|endoftext|>', '') + '\n\n');
}

// fuzz: random strings over a pool of troublesome characters
{
  const pool = [' ', ' ', ' ', ' ', '\t', '\n', '\n', '\r', '\u000b', '\u00a0', '\u2009', '\u3000', '\u2028',
    'a', 'b', 'Z', '\u00e9', '\u00df', '\u0436', '\u03bb', '\u4e2d', '\u0639', '\u0915', '\u0301', '\u200d',
    '1', '0', '\u0663', '\u00b2', '\u00bd', '\u216b', '.', ',', '!', '-', '"', "'", "'", "'", "'",
    's', 't', 'd', 'm', 'l', 'l', 'v', 'e', 'r', 'S', 'L', 'V', 'E', 'R', 'T', 'M', 'D',
    '\ud83d\ude00', '\ud83d\udc4d\ud83c\udffd', '\u2019', '$', '\u20ac', '<', '|', '\u0000', '\u007f', '\u200b', '\ufffd', '\ue000'];
  for (let i = 0; i < 200; i++) {
    const n = 1 + Math.floor(rand() * 30);
    let s = '';
    for (let k = 0; k < n; k++) s += pick(pool);
    add('fuzz', s);
  }
}

// write the groups, check the excluded characters are absent
const docs = [];
const docIds = [];
for (const [g, cases] of Object.entries(groups)) {
  const lines = [];
  for (const text of cases) {
    if (/[\ufeff\u0085]/.test(text)) throw new Error(`${g}: U+FEFF/U+0085 not allowed in fixtures`);
    const ids = ordinary(text);
    lines.push(JSON.stringify({ text, ids }));
    if (text.length && !text.includes("<|endoftext|>") && g !== "fuzz" && g !== "longest") {
      docs.push(text);
      docIds.push(50256, ...ids);
    }
  }
  fs.writeFileSync(path.join(outDir, g + '.jsonl'), lines.join('\n') + '\n');
}
fs.writeFileSync(path.join(outDir, 'docs.txt'), docs.map((d) => '<|endoftext|>' + d).join(''));
fs.writeFileSync(path.join(outDir, 'docs.jsonl'), docs.map((d) => JSON.stringify({ text: d })).join('\n') + '\n');
fs.writeFileSync(path.join(outDir, 'docs.ids'), docIds.join('\n') + '\n');
// the split on <|endoftext|> must give back exactly these documents
const back = fs.readFileSync(path.join(outDir, 'docs.txt'), 'utf8').split('<|endoftext|>').filter((d) => d.length);
if (back.length !== docs.length || back.some((d, i) => d !== docs[i])) throw new Error('docs.txt does not split back');
const check = [];
for (const d of back) check.push(50256, ...ordinary(d));
if (check.join(' ') !== docIds.join(' ')) throw new Error('docs.ids mismatch');
process.stderr.write(`fixtures: ${Object.keys(groups).length} groups, ${docs.length} documents, ${docIds.length} tokens\n`);
EOF
ls -l "$out"
