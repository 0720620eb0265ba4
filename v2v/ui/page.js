// v2v's page script: the upload's size check before any byte is sent, and the players kept in step.
(() => {
  const MAX = window.V2V_MAX_UPLOAD || 0;

  // the same wording as the server's (v2v/ui/uploads.py: human_size, store_upload)
  function humanSize(n) {
    for (const unit of ["B", "KB", "MB", "GB"]) {
      if (n < 1000 || unit === "GB") {
        if (unit === "B") return `${n} B`;
        return `${n.toFixed(1)} ${unit}`.replace(".0 ", " ");
      }
      n /= 1000;
    }
    return `${n.toFixed(1)} TB`;
  }

  function showError(text) {
    const line = document.getElementById("v2v-error");
    if (!line) return;
    line.textContent = text;
    line.classList.remove("v2v-empty");
    line.setAttribute("role", "alert");
  }

  function tooBig(files) {
    for (const f of files || []) if (MAX && f.size > MAX) return f;
    return null;
  }

  function refuse(e, f) {
    e.stopImmediatePropagation();
    e.preventDefault();
    showError(`${f.name} is ${humanSize(f.size)}: the upload limit is ${humanSize(MAX)} ` +
              "(start the page with a larger --max-upload, or trim the clip first)");
  }

  // capture phase on the document: seen before the upload widget's own handlers
  for (const type of ["input", "change"]) document.addEventListener(type, (e) => {
    const t = e.target;
    if (!(t instanceof HTMLInputElement) || t.type !== "file" || !t.closest("#v2v-upload")) return;
    const f = tooBig(t.files);
    if (f) { refuse(e, f); if (type === "change") t.value = ""; }
  }, true);
  document.addEventListener("drop", (e) => {
    if (!(e.target instanceof Element) || !e.target.closest("#v2v-upload")) return;
    const f = tooBig(e.dataTransfer && e.dataTransfer.files);
    if (f) refuse(e, f);
  }, true);

  // Players in step: what one does (play, pause, seek, speed), the others in its group do. Changes made here are
  // expected by their element, so that their own events are not mirrored back.
  const expected = new WeakMap();
  function expect(v, type) {
    const m = expected.get(v) || {};
    m[type] = (m[type] || 0) + 1;
    expected.set(v, m);
  }
  function wasExpected(v, type) {
    const m = expected.get(v);
    if (!m || !m[type]) return false;
    m[type] -= 1;
    return true;
  }
  function others(v) {
    const g = v.closest(".v2v-players");
    return g ? [...g.querySelectorAll("video[data-v2v-sync]")].filter((o) => o !== v) : [];
  }
  function seek(o, t) {
    if (Math.abs(o.currentTime - t) > 0.05) { expect(o, "seeked"); o.currentTime = t; }
  }
  function mirror(e) {
    const v = e.target;
    if (!(v instanceof HTMLVideoElement) || !v.hasAttribute("data-v2v-sync")) return;
    if (wasExpected(v, e.type)) return;
    for (const o of others(v)) {
      seek(o, v.currentTime);
      o.playbackRate = v.playbackRate;
      if (e.type === "play" && o.paused) { expect(o, "play"); o.play().catch(() => wasExpected(o, "play")); }
      if (e.type === "pause" && !o.paused) { expect(o, "pause"); o.pause(); }
    }
  }
  for (const type of ["play", "pause", "seeked", "ratechange"]) document.addEventListener(type, mirror, true);

  // while playing, the followers stay within 0.15 s of the one with the sound
  document.addEventListener("timeupdate", (e) => {
    const v = e.target;
    if (!(v instanceof HTMLVideoElement) || !v.hasAttribute("data-v2v-sync") || v.muted || v.paused) return;
    // a follower still seeking is left alone: seeking it again on a slow machine only makes it lag more
    for (const o of others(v)) if (!o.seeking && Math.abs(o.currentTime - v.currentTime) > 0.15) {
      expect(o, "seeked");
      o.currentTime = v.currentTime;
    }
  }, true);
})();
