// registry-gate web UI: copy buttons, local dates, "/" to search. The pages
// work without it.
"use strict";
document.documentElement.classList.add("js");

function announce(text) {
  const live = document.getElementById("live");
  if (live) { live.textContent = ""; setTimeout(() => { live.textContent = text; }, 30); }
}

function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    return navigator.clipboard.writeText(text);
  }
  return new Promise((resolve, reject) => {
    const area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.position = "fixed";
    area.style.opacity = "0";
    document.body.appendChild(area);
    area.select();
    const ok = document.execCommand("copy");
    area.remove();
    ok ? resolve() : reject(new Error("copy refused"));
  });
}

document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-copy]");
  if (!button) return;
  const text = button.getAttribute("data-copy");
  const label = button.textContent;
  copyText(text).then(
    // A secret is not read out (data-quiet): it would be spoken aloud.
    () => { button.textContent = "Copied"; announce(button.hasAttribute("data-quiet") ? "Copied." : "Copied: " + text); },
    () => { button.textContent = "Copy failed"; announce("Copy failed; select the text and copy it."); },
  ).finally(() => setTimeout(() => { button.textContent = label; }, 1500));
});

document.addEventListener("DOMContentLoaded", () => {
  for (const t of document.querySelectorAll("time[datetime]")) {
    const d = new Date(t.getAttribute("datetime"));
    if (isNaN(d)) continue;
    t.title = t.textContent;
    const seconds = t.hasAttribute("data-seconds");
    t.textContent = d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: seconds ? "medium" : "short" });
  }
});

document.addEventListener("keydown", (event) => {
  if (event.key !== "/" || event.ctrlKey || event.metaKey || event.altKey) return;
  const tag = (document.activeElement && document.activeElement.tagName) || "";
  if (tag === "INPUT" || tag === "TEXTAREA") return;
  const search = document.getElementById("q");
  if (search) { event.preventDefault(); search.focus(); search.select(); }
});
