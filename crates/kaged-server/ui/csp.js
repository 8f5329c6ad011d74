// Keeps the console inside its Content-Security-Policy (`script-src 'self'`, `style-src 'self'`,
// no inline code, no eval): reports any violation, and routes xterm.js's computed CSS through
// CSSOM. Imported first by app.js, so both are in place before xterm.js runs.

// Anything the CSP refuses is a bug of this console: say so in the console, and keep the list
// on <html data-csp-violations> where the end-to-end tests look for it.
document.addEventListener("securitypolicyviolation", (e) => {
  const where = `${e.sourceFile}:${e.lineNumber}`;
  const what = `${e.effectiveDirective} refused ${e.blockedURI || "inline"} at ${where}`;
  console.error(`kaged console: CSP violation: ${what}`);
  const seen = document.documentElement.dataset.cspViolations;
  document.documentElement.dataset.cspViolations = seen ? `${seen}\n${what}` : what;
});

// xterm.js 6's DOM renderer writes its computed CSS (theme colours, cell size, the scrollbar)
// into <style> elements it creates, and 24-bit colours into style="" attributes through
// setAttribute. The page's CSP (`style-src 'self'`, no 'unsafe-inline') blocks both: the
// terminal would lose its colours and cell layout. CSS set through CSSOM by a script the CSP
// already allowed is not subject to style-src, so both go through CSSOM here:
// - document.createElement("style") (only xterm.js calls it) makes a <kaged-script-style>
//   element instead, which the browser never treats as a stylesheet; the text a script gives
//   it goes into a constructed stylesheet, adopted by the document while the element is in it;
// - a script's setAttribute("style", …) becomes element.style.cssText = ….
// Markup injection (what style-src guards against) is still refused: the HTML parser goes
// through none of these.
function installStyleShim() {
  if (
    typeof CSSStyleSheet !== "function" ||
    typeof CSSStyleSheet.prototype.replaceSync !== "function" ||
    !("adoptedStyleSheets" in Document.prototype) ||
    !window.customElements
  ) {
    return () => {};
  }
  const ours = new WeakSet(); // the sheets made here
  const live = new Set(); // elements holding a sheet
  const sync = () => {
    const keep = document.adoptedStyleSheets.filter((sheet) => !ours.has(sheet));
    const mine = [...live].filter((el) => el.isConnected).map((el) => el.sheetOf);
    document.adoptedStyleSheets = keep.concat(mine);
  };
  class ScriptStyle extends HTMLElement {
    constructor() {
      super();
      this.cssText = "";
      this.sheetOf = new CSSStyleSheet();
      ours.add(this.sheetOf);
      live.add(this);
    }
    get textContent() {
      return this.cssText;
    }
    set textContent(value) {
      this.cssText = value == null ? "" : String(value);
      this.sheetOf.replaceSync(this.cssText);
      sync();
    }
    get innerText() {
      return this.cssText;
    }
    set innerText(value) {
      this.textContent = value;
    }
    connectedCallback() {
      live.add(this);
      sync();
    }
    disconnectedCallback() {
      sync();
    }
  }
  customElements.define("kaged-script-style", ScriptStyle);
  const baseCreateElement = Document.prototype.createElement;
  Document.prototype.createElement = function createElement(name, options) {
    if (typeof name === "string" && name.toLowerCase() === "style") return new ScriptStyle();
    return baseCreateElement.call(this, name, options);
  };
  const baseSetAttribute = Element.prototype.setAttribute;
  Element.prototype.setAttribute = function setAttribute(name, value) {
    if (typeof name === "string" && name.toLowerCase() === "style" && this.style) {
      this.style.cssText = String(value);
      return undefined;
    }
    return baseSetAttribute.call(this, name, value);
  };
  // After a terminal is disposed: forget its (now detached) elements.
  return () => {
    for (const el of live) if (!el.isConnected) live.delete(el);
    sync();
  };
}

/** Re-check which script-made style elements are still in the document. */
export const syncScriptStyles = installStyleShim();
