// reelscope web page: upload, follow the job, show the report. No framework.
"use strict";

const $ = (id) => document.getElementById(id);
let apiKey = localStorage.getItem("reelscope.key") || "";
let polling = null;

function headers() { return { Authorization: "Bearer " + apiKey }; }
function fmt(t) {
  const m = Math.floor(t / 60), s = (t % 60).toFixed(1).padStart(4, "0");
  return `${m}:${s}`;
}
function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (cls) node.className = cls;
  return node;
}
function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}
async function api(path) {
  const response = await fetch(path, { headers: headers() });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error((body.error && body.error.message) || response.statusText);
  return body;
}

function useKey() {
  apiKey = $("key").value.trim();
  localStorage.setItem("reelscope.key", apiKey);
  $("key-state").textContent = apiKey ? "key set" : "";
  refreshList();
}

function upload(event) {
  event.preventDefault();
  showError("");
  const file = $("file").files[0];
  if (!apiKey) { showError("Enter your API key first."); return; }
  if (!file) { showError("Choose a video file."); return; }
  const form = new FormData();
  form.append("file", file);
  const xhr = new XMLHttpRequest();
  xhr.open("POST", "/v1/videos");
  xhr.setRequestHeader("Authorization", "Bearer " + apiKey);
  $("progress").hidden = false;
  $("report").hidden = true;
  xhr.upload.onprogress = (e) => {
    if (e.lengthComputable) {
      $("progress-bar").value = Math.round((100 * e.loaded) / e.total);
      $("status").textContent = `uploading ${Math.round((100 * e.loaded) / e.total)}%`;
    }
  };
  xhr.onload = () => {
    let body = {};
    try { body = JSON.parse(xhr.responseText); } catch (e) { /* not JSON */ }
    if (xhr.status !== 202) {
      $("progress").hidden = true;
      showError((body.error && body.error.message) || `upload failed (HTTP ${xhr.status})`);
      return;
    }
    follow(body.id);
  };
  xhr.onerror = () => { $("progress").hidden = true; showError("upload failed: the server is unreachable"); };
  xhr.send(form);
}

function follow(id) {
  clearInterval(polling);
  const tick = async () => {
    let job;
    try { job = await api(`/v1/videos/${id}`); } catch (e) { showError(e.message); clearInterval(polling); return; }
    $("progress").hidden = false;
    if (job.status === "done") {
      clearInterval(polling);
      $("progress-bar").value = 100;
      $("status").textContent = "done";
      render(job);
      refreshList();
    } else if (job.status === "failed") {
      clearInterval(polling);
      $("status").textContent = "failed";
      showError(`analysis failed: ${job.reason}`);
      refreshList();
    } else {
      $("progress-bar").removeAttribute("value");
      $("status").textContent = job.status === "running" ? `analyzing: ${job.stage || "starting"}` : "queued";
    }
  };
  tick();
  polling = setInterval(tick, 1000);
}

async function thumbnail(url, img) {
  const response = await fetch(url, { headers: headers() });
  if (response.ok) img.src = URL.createObjectURL(await response.blob());
}

function render(job) {
  const r = job.report;
  const v = r.video;
  $("report").hidden = false;
  $("report-title").textContent = v.filename || v.id;
  $("video-meta").textContent =
    `${v.duration_s.toFixed(1)} s · ${v.width}x${v.height} · ${v.fps.toFixed(0)} fps · id ${v.id}` +
    (r.timings_s.total ? ` · analyzed in ${r.timings_s.total.toFixed(1)} s` : "");

  const timeline = $("timeline");
  timeline.replaceChildren();
  const thumbs = job.thumbnails || [];
  thumbs.forEach((t, i) => {
    const end = i + 1 < thumbs.length ? thumbs[i + 1].time_s : v.duration_s;
    const li = el("li");
    const img = el("img");
    img.alt = `frame at ${fmt(t.time_s)}`;
    thumbnail(t.url, img);
    li.append(img, el("div", fmt(t.time_s), "t"));
    const labels = r.labels.filter((l) => l.start_s < end && l.end_s > t.time_s).map((l) => l.label);
    if (labels.length) li.append(el("div", labels.slice(0, 3).join(", "), "labels"));
    const texts = r.ocr.filter((o) => o.start_s < end && o.end_s > t.time_s).map((o) => o.text);
    if (texts.length) li.append(el("div", texts.join(" / "), "text"));
    timeline.append(li);
  });

  const captions = $("captions");
  captions.replaceChildren();
  for (const o of r.ocr) {
    const li = el("li");
    li.append(el("span", `${fmt(o.start_s)}–${fmt(o.end_s)}`, "ts"), el("span", o.text, "caption"));
    captions.append(li);
  }
  if (!r.ocr.length) captions.append(el("li", "no on-screen text"));

  $("language").textContent = r.transcript.language ? `(${r.transcript.language})` : "";
  const transcript = $("transcript");
  transcript.replaceChildren();
  for (const s of r.transcript.segments) {
    const li = el("li");
    li.append(el("span", fmt(s.start_s), "ts"), el("span", s.text.trim(), "segment"));
    transcript.append(li);
  }
  if (!r.transcript.segments.length) transcript.append(el("li", "no speech"));

  $("sentiment").textContent = `${r.sentiment.label} (${r.sentiment.score.toFixed(2)})`;
  const copyright = $("copyright");
  copyright.replaceChildren();
  for (const m of r.copyright) {
    copyright.append(el("li", `${m.title}: ${m.kind} match, score ${m.score.toFixed(2)}, ${m.duration_s.toFixed(1)} s from ${fmt(m.query_start_s)}`));
  }
  if (!r.copyright.length) copyright.append(el("li", "none"));
  const similar = $("similar");
  similar.replaceChildren();
  for (const s of r.similar) {
    const li = el("li");
    const a = el("a", s.video_id);
    a.onclick = () => follow(s.video_id);
    li.append(a, el("span", ` ${s.score.toFixed(2)}`, "meta"));
    similar.append(li);
  }
  if (!r.similar.length) similar.append(el("li", "none yet"));
}

async function refreshList() {
  if (!apiKey) return;
  let jobs = [];
  try { jobs = await api("/v1/videos"); } catch (e) { showError(e.message); return; }
  const list = $("videos");
  list.replaceChildren();
  for (const j of jobs) {
    const li = el("li");
    const a = el("a", j.filename || j.id);
    a.onclick = () => follow(j.id);
    li.append(a, el("span", ` ${j.status}`, "meta"));
    list.append(li);
  }
}

$("key").value = apiKey;
$("save-key").onclick = useKey;
$("upload-form").onsubmit = upload;
refreshList();
