// Progressive enhancement only: every page reads and every form posts without it.
document.documentElement.classList.add("js");
document.addEventListener("click", function (event) {
  var target = event.target;
  if (!(target instanceof Element)) return;
  if (target.closest("[data-print]")) { window.print(); return; }
  var copy = target.closest("[data-copy]");
  if (copy && navigator.clipboard) {
    navigator.clipboard.writeText(new URL(copy.getAttribute("data-copy"), location.href).href)
      .then(function () { copy.setAttribute("data-copied", "yes");
                          var note = document.getElementById(copy.getAttribute("aria-describedby") || "");
                          if (note) note.textContent = copy.getAttribute("data-done") || ""; });
  }
});
