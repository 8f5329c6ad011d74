// A small Markdown renderer for the model's text: source text in, DOM nodes out. It never
// parses HTML: raw HTML in the text stays text (`<img src=x>` is shown as those characters),
// and every piece of the text reaches the DOM through Text nodes.
//
// Blocks: paragraphs, ATX headings (`#` … `######`, drawn as h3–h6 so they stay below the page's
// own headings), fenced code blocks (``` or ~~~, an unclosed fence runs to the end: text still
// streaming), bullet and numbered lists (nested by indentation), blockquotes, thematic breaks.
// Inline: emphasis and strong (`*`/`_`), strikethrough (`~~`), code spans, backslash escapes,
// links `[text](url)`, autolinks `<https://…>` and bare `https://…`.
//
// Links show their URL: `text (url)`. Only http and https URLs become <a> elements, always with
// rel="noopener noreferrer nofollow" and target="_blank"; anything else (javascript:, data:,
// relative paths) stays plain text. Nothing is loaded or followed on its own: an image
// `![alt](url)` is drawn as text naming its URL, never fetched.

/** A longer text is drawn as plain text: the parser stays fast on anything a model sends. */
const MAX_CHARS = 200000;
/** How deep lists and blockquotes nest before the rest is drawn as plain paragraphs. */
const MAX_DEPTH = 12;
/** How many candidate closers one opener looks at (keeps pathological input linear). */
const MAX_SCAN = 64;
/** The longest link label, and how deep emphasis nests. */
const MAX_LABEL = 512;
const MAX_NEST = 16;
const AUTOLINK = /<([a-zA-Z][a-zA-Z0-9+.-]{1,31}:[^\s<>]*)>/y;
const BARE_URL = /https?:\/\/[^\s<>"'`]+/iy;

const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([^`\s]*)[^`]*$/;
const HEADING = /^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$/;
const RULE = /^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$/;
const QUOTE = /^ {0,3}> ?(.*)$/;
const ITEM = /^( {0,12})([-*+]|\d{1,9}[.)])(?:([ \t]+)(.*))?$/;
const PUNCT = /[!"#$%&'()*+,\-./:;<=>?@[\\\]^_`{|}~]/;

/** Make an element; `text` becomes its only child (a Text node). */
function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** The URL if it is an absolute http(s) URL a link may point to, else null. */
export function safeUrl(raw) {
  const s = String(raw).trim();
  if (!/^https?:\/\//i.test(s)) return null;
  let url;
  try {
    url = new URL(s);
  } catch {
    return null;
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") return null;
  return url.href;
}

/**
 * A link drawn as its label (nodes; none for an autolink) and its URL; a real <a> only for
 * http(s). An image is drawn the same way, as text: it is never loaded.
 */
function link(label, url, image) {
  const safe = safeUrl(url);
  const wrap = el("span", image ? "md-image" : "md-link");
  if (image) wrap.append(el("span", "md-image-label", `image: ${label || "(no description)"}`));
  else if (label) wrap.append(...label);
  const target = safe ? el("a", null, url) : el("span", "md-url", url);
  if (safe) {
    target.href = safe;
    target.rel = "noopener noreferrer nofollow";
    target.target = "_blank";
  }
  if (image || label) wrap.append(" (", target, ")");
  else wrap.append(target);
  return wrap;
}

/** Where the code span opened by the backtick run at `i` closes: [contentEnd, next] or null. */
function codeSpanEnd(s, i, n) {
  let j = i + n;
  for (let tries = 0; tries < MAX_SCAN; tries += 1) {
    const k = s.indexOf("`", j);
    if (k < 0) return null;
    let m = k;
    while (s[m] === "`") m += 1;
    if (m - k === n) return [k, m];
    j = m;
  }
  return null;
}

/** The closing bracket of a link label opened at `i` (nesting counted), or -1. */
function labelEnd(s, i) {
  let depth = 0;
  const end = Math.min(s.length, i + MAX_LABEL);
  for (let k = i; k < end; k += 1) {
    const c = s[k];
    if (c === "\\") k += 1;
    else if (c === "`") {
      let n = 0;
      while (s[k + n] === "`") n += 1;
      const end = codeSpanEnd(s, k, n);
      if (end) k = end[1] - 1;
      else k += n - 1;
    } else if (c === "[") depth += 1;
    else if (c === "]") {
      depth -= 1;
      if (depth === 0) return k;
    }
  }
  return -1;
}

/** `(url "title")` right after a label: [url, next index] or null. */
function linkTarget(s, i) {
  if (s[i] !== "(") return null;
  let k = i + 1;
  while (s[k] === " ") k += 1;
  let url;
  if (s[k] === "<") {
    const close = s.indexOf(">", k);
    if (close < 0 || s.slice(k, close).includes("\n")) return null;
    url = s.slice(k + 1, close);
    k = close + 1;
  } else {
    const start = k;
    let depth = 0;
    while (k < s.length && !/\s/.test(s[k])) {
      if (s[k] === "(") depth += 1;
      else if (s[k] === ")") {
        if (depth === 0) break;
        depth -= 1;
      }
      k += 1;
    }
    url = s.slice(start, k);
  }
  while (s[k] === " ") k += 1;
  if (s[k] === '"' || s[k] === "'") {
    const close = s.indexOf(s[k], k + 1);
    if (close < 0) return null;
    k = close + 1;
    while (s[k] === " ") k += 1;
  }
  if (s[k] !== ")") return null;
  return [url, k + 1];
}

const isSpace = (c) => c === undefined || /\s/.test(c);
const isWord = (c) => c !== undefined && /[\p{L}\p{N}]/u.test(c);

/**
 * The closer of an emphasis run of `n` times `ch` opened at `i`: its index, or -1. The opener
 * must be followed by non-space, the closer preceded by non-space; `_` never inside a word.
 */
function emphasisEnd(s, i, ch, n) {
  const delim = ch.repeat(n);
  if (isSpace(s[i + n])) return -1;
  if (ch === "_" && isWord(s[i - 1])) return -1;
  let from = i + n + 1;
  for (let tries = 0; tries < MAX_SCAN; tries += 1) {
    const k = s.indexOf(delim, from);
    if (k < 0) return -1;
    let run = 0;
    while (s[k + run] === ch) run += 1;
    const ok =
      !isSpace(s[k - 1]) &&
      s[k - 1] !== "\\" &&
      // A single closer is not part of a longer run.
      (n !== 1 || run === 1) &&
      !(ch === "_" && isWord(s[k + run]));
    if (ok) return k;
    from = k + run;
  }
  return -1;
}

/**
 * Inline Markdown → nodes. `links`: whether links may be made (not inside a link's label);
 * `nest`: how deep in emphasis this is.
 */
export function inline(s, links = true, nest = 0) {
  const out = [];
  let text = "";
  // Where the next `](` is: no link can start after the last one.
  let linkEnd = -2;
  const flush = () => {
    if (text) out.push(document.createTextNode(text));
    text = "";
  };
  let i = 0;
  while (i < s.length) {
    const c = s[i];
    if (c === "\\" && i + 1 < s.length && PUNCT.test(s[i + 1])) {
      text += s[i + 1];
      i += 2;
      continue;
    }
    if (c === "`") {
      let n = 0;
      while (s[i + n] === "`") n += 1;
      const end = codeSpanEnd(s, i, n);
      if (!end) {
        text += "`".repeat(n);
        i += n;
        continue;
      }
      let code = s.slice(i + n, end[0]).replace(/\n/g, " ");
      if (code.length > 2 && code.startsWith(" ") && code.endsWith(" ") && code.trim()) {
        code = code.slice(1, -1);
      }
      flush();
      out.push(el("code", null, code));
      i = end[1];
      continue;
    }
    if (c === "*" || c === "_" || c === "~") {
      let run = 0;
      while (s[i + run] === c) run += 1;
      let n = c === "~" ? (run === 2 ? 2 : 0) : Math.min(run, 3);
      if (nest >= MAX_NEST) n = 0;
      let close = n ? emphasisEnd(s, i, c, n) : -1;
      // `***a***` is strong emphasis; without a `***` closer, try `**`.
      if (close < 0 && n === 3) {
        n = 2;
        close = emphasisEnd(s, i, c, n);
      }
      if (close < 0) {
        text += c.repeat(run);
        i += run;
        continue;
      }
      flush();
      const node = el(c === "~" ? "del" : n === 1 ? "em" : "strong");
      let host = node;
      if (n === 3) {
        host = el("em");
        node.append(host);
      }
      host.append(...inline(s.slice(i + n, close), links, nest + 1));
      out.push(node);
      i = close + n;
      continue;
    }
    if (links && (c === "[" || (c === "!" && s[i + 1] === "[")) && linkEnd !== -1) {
      if (linkEnd < i) linkEnd = s.indexOf("](", i);
    }
    if (links && (c === "[" || (c === "!" && s[i + 1] === "[")) && linkEnd > i) {
      const open = c === "!" ? i + 1 : i;
      const end = labelEnd(s, open);
      const target = end > 0 ? linkTarget(s, end + 1) : null;
      if (target) {
        flush();
        const label = s.slice(open + 1, end);
        if (c === "!") out.push(link(label, target[0], true));
        else out.push(link(inline(label, false, nest + 1), target[0], false));
        i = target[1];
        continue;
      }
    }
    if (links && c === "<") {
      AUTOLINK.lastIndex = i;
      const m = AUTOLINK.exec(s);
      if (m) {
        flush();
        out.push(link(null, m[1], false));
        i += m[0].length;
        continue;
      }
    }
    if (links && (c === "h" || c === "H") && !isWord(s[i - 1])) {
      BARE_URL.lastIndex = i;
      const m = BARE_URL.exec(s);
      if (m) {
        // Trailing punctuation belongs to the sentence, not the URL.
        let url = m[0].replace(/[.,:;!?]+$/, "");
        if (url.endsWith(")") && !url.includes("(")) url = url.slice(0, -1);
        flush();
        out.push(link(null, url, false));
        i += url.length;
        continue;
      }
    }
    text += c;
    i += 1;
  }
  flush();
  return out;
}

/** Leading spaces of a line (a tab counts to the next multiple of 4). */
function indentOf(line) {
  let n = 0;
  for (const c of line) {
    if (c === " ") n += 1;
    else if (c === "\t") n += 4 - (n % 4);
    else break;
  }
  return n;
}

/** `line` without up to `n` columns of indentation. */
function dedent(line, n) {
  let col = 0;
  let k = 0;
  while (k < line.length && col < n) {
    if (line[k] === " ") col += 1;
    else if (line[k] === "\t") col += 4 - (col % 4);
    else break;
    k += 1;
  }
  return line.slice(k);
}

/** Whether `line` starts a block other than a paragraph (it interrupts a paragraph). */
function startsBlock(line) {
  return (
    FENCE.test(line) ||
    HEADING.test(line) ||
    RULE.test(line) ||
    QUOTE.test(line) ||
    (ITEM.test(line) && ITEM.exec(line)[4] !== undefined && indentOf(line) < 4)
  );
}

/** Block Markdown (an array of lines) → nodes appended to `parent`. */
function blocks(lines, parent, depth) {
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (!line.trim()) {
      i += 1;
      continue;
    }
    if (depth >= MAX_DEPTH) {
      const p = el("p", null, lines.slice(i).join("\n"));
      parent.append(p);
      return;
    }
    const fence = FENCE.exec(line);
    if (fence) {
      const mark = fence[1];
      const body = [];
      i += 1;
      while (i < lines.length) {
        const t = lines[i].trim();
        if (t.startsWith(mark[0].repeat(mark.length)) && /^([`~])\1*$/.test(t) && t[0] === mark[0]) {
          i += 1;
          break;
        }
        body.push(lines[i]);
        i += 1;
      }
      const pre = el("pre", "md-code");
      const code = el("code", null, body.join("\n"));
      if (fence[2]) code.dataset.lang = fence[2];
      pre.append(code);
      parent.append(pre);
      continue;
    }
    const heading = HEADING.exec(line);
    if (heading) {
      const level = heading[1].length;
      const node = el(`h${Math.min(level + 2, 6)}`, `md-h md-h${level}`);
      node.append(...inline(heading[2] || ""));
      parent.append(node);
      i += 1;
      continue;
    }
    if (RULE.test(line)) {
      parent.append(el("hr", "md-rule"));
      i += 1;
      continue;
    }
    if (QUOTE.test(line)) {
      const inner = [];
      while (i < lines.length && lines[i].trim()) {
        const q = QUOTE.exec(lines[i]);
        // A line without `>` continues the quote's paragraph (lazy continuation).
        if (!q && startsBlock(lines[i])) break;
        inner.push(q ? q[1] : lines[i]);
        i += 1;
      }
      const quote = el("blockquote", "md-quote");
      blocks(inner, quote, depth + 1);
      parent.append(quote);
      continue;
    }
    const item = ITEM.exec(line);
    if (item && item[4] !== undefined && indentOf(line) < 4) {
      i = list(lines, i, parent, depth);
      continue;
    }
    // A paragraph: until a blank line or a line that starts another block.
    const para = [line.trim()];
    i += 1;
    while (i < lines.length && lines[i].trim() && !startsBlock(lines[i])) {
      para.push(lines[i].trim());
      i += 1;
    }
    const p = el("p");
    p.append(...inline(para.join("\n")));
    parent.append(p);
  }
}

/** A list starting at `lines[i]`; its items' content parsed as blocks. Returns the next index. */
function list(lines, i, parent, depth) {
  const first = ITEM.exec(lines[i]);
  const ordered = /\d/.test(first[2]);
  const kind = first[2].slice(-1);
  const node = el(ordered ? "ol" : "ul", "md-list");
  if (ordered) {
    const start = parseInt(first[2], 10);
    if (start !== 1) node.start = start;
  }
  const baseIndent = indentOf(lines[i]);
  while (i < lines.length) {
    const m = ITEM.exec(lines[i]);
    if (!m || m[4] === undefined) break;
    const indent = indentOf(lines[i]);
    const sameKind = (/\d/.test(m[2]) === ordered) && m[2].slice(-1) === kind;
    if (!sameKind || indent < baseIndent || indent >= baseIndent + 4) break;
    // Content starts after the marker and its spaces (at most 4 of them count).
    const contentCol = indent + m[2].length + Math.min(Math.max(m[3].length, 1), 4);
    const body = [m[4]];
    i += 1;
    let blank = false;
    while (i < lines.length) {
      const next = lines[i];
      if (!next.trim()) {
        blank = true;
        body.push("");
        i += 1;
        continue;
      }
      const ind = indentOf(next);
      if (ind >= contentCol) {
        body.push(dedent(next, contentCol));
      } else if (!blank && !startsBlock(next)) {
        body.push(next.trim()); // lazy continuation of the item's paragraph
      } else {
        break;
      }
      blank = false;
      i += 1;
    }
    while (body.length && !body[body.length - 1].trim()) body.pop();
    const li = el("li");
    blocks(body, li, depth + 1);
    node.append(li);
    // A blank line then something that is not an item of this list ends it.
    if (i < lines.length && blank) {
      const again = ITEM.exec(lines[i]);
      if (!again || again[4] === undefined || indentOf(lines[i]) !== baseIndent) break;
    }
  }
  parent.append(node);
  return i;
}

/**
 * Draw Markdown `source` into `target` (emptied first). Returns `target`. A text longer than
 * MAX_CHARS is drawn as it is, as text.
 */
export function renderMarkdown(target, source) {
  const text = String(source ?? "");
  target.replaceChildren();
  if (text.length > MAX_CHARS) {
    target.append(el("p", "md-plain", text));
    return target;
  }
  blocks(text.replace(/\r\n?/g, "\n").split("\n"), target, 0);
  return target;
}
