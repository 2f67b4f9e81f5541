// vmrepo's web page works without this script. With it: the table filters as
// one types in the search box, the filter form submits when a choice changes,
// and each command has a button that copies it.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  var q = document.getElementById("f-q");
  var table = document.getElementById("images");
  var count = document.getElementById("count");
  if (q && table) {
    var rows = Array.prototype.slice.call(table.tBodies[0].rows);
    // Only the words a server-side filter has not applied yet narrow the rows.
    var applied = q.value;
    q.addEventListener("input", function () {
      if (q.value.indexOf(applied) !== 0) { return; }
      var words = q.value.toLowerCase().split(/\s+/).filter(function (w) {
        return w && !/^[a-z_0-9]+[=!<>~]/.test(w);
      });
      var shown = 0;
      rows.forEach(function (r) {
        var text = r.getAttribute("data-text") || "";
        var ok = words.every(function (w) { return text.indexOf(w) >= 0; });
        r.hidden = !ok;
        if (ok) { shown += 1; }
      });
      if (count) { count.textContent = shown + (shown === 1 ? " image shown" : " images shown") + " (press Enter to search every field on the server)."; }
    });
  }
  document.querySelectorAll("form.filters select").forEach(function (s) {
    s.addEventListener("change", function () { s.form.submit(); });
  });
  if (navigator.clipboard) {
    document.querySelectorAll("pre.cmd").forEach(function (pre) {
      var b = document.createElement("button");
      b.type = "button";
      b.className = "copy";
      b.textContent = "Copy";
      b.setAttribute("aria-label", "Copy the command");
      b.addEventListener("click", function () {
        navigator.clipboard.writeText(pre.querySelector("code").textContent).then(function () {
          b.textContent = "Copied";
          setTimeout(function () { b.textContent = "Copy"; }, 1500);
        });
      });
      pre.appendChild(b);
    });
  }
});
