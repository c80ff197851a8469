// MathJax 3 for the whole site: Markdown pages (pymdownx.arithmatex, generic mode) and the
// rendered notebooks (docs_hooks/notebooks.py removes the MathJax 2 that nbconvert embeds).
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"], ["$", "$"]],
    displayMath: [["\\[", "\\]"], ["$$", "$$"]],
    processEscapes: true,
    processEnvironments: true,
  },
  options: {
    // Typeset only arithmatex output and the Markdown cells of notebooks: everything inside
    // material's page container is ignored, except the subtrees of these two classes.
    // (material's usual ".*|" would also ignore the <p> children of a notebook's Markdown cell.)
    ignoreHtmlClass: "md-container",
    processHtmlClass: "arithmatex|jp-RenderedMarkdown",
  },
};

// re-typeset after material's instant navigation, if it is ever turned on
if (typeof document$ !== "undefined") {
  document$.subscribe(() => {
    if (window.MathJax && MathJax.typesetPromise) {
      MathJax.startup.output.clearCache();
      MathJax.typesetClear();
      MathJax.texReset();
      MathJax.typesetPromise();
    }
  });
}
