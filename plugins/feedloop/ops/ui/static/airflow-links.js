// Links into Airflow's own pages (runs, the Models view). Inside Airflow the page is an iframe
// sandboxed without top navigation, so a target=_top link is blocked: hand the path to Airflow's
// router in the parent window instead (same origin). Opened on its own, the link just navigates.
// A file, not an inline script: the pages' Content-Security-Policy runs no inline script at all.
document.addEventListener("click", function (event) {
  var link = event.target.closest("a[data-airflow]");
  if (!link || event.button || event.ctrlKey || event.metaKey || event.shiftKey || window.top === window) return;
  try {
    window.top.history.pushState(null, "", link.getAttribute("href"));
    window.top.dispatchEvent(new PopStateEvent("popstate", {state: null}));
    event.preventDefault();
  } catch (err) { /* not embedded by this Airflow: follow the link in place */ }
});
