const $ = (id) => document.getElementById(id);
// the key (read, write or admin, whichever the server wants) goes with every request, images included
const keyHeaders = (extra = {}) => ($('api-key').value ? { 'X-API-Key': $('api-key').value, ...extra } : extra);
// the API's own words: {"detail": "..."}, or FastAPI's list of field errors
const detailText = (body) => {
  const detail = body?.detail ?? body;
  if (typeof detail === 'string') return detail;
  if (Array.isArray(detail)) return detail.map((e) => `${(e.loc ?? []).slice(-1)[0] ?? ''}: ${e.msg}`).join('; ');
  return JSON.stringify(detail);
};
const request = async (path, options = {}) => {
  const r = await fetch(path, { ...options, headers: keyHeaders(options.headers) });
  const body = r.headers.get('content-type')?.includes('json') ? await r.json() : await r.text();
  if (!r.ok) throw new Error(detailText(body));
  return { status: r.status, body };
};
const api = async (path, options = {}) => (await request(path, options)).body;
const text = (tag, content, cls) => { const e = document.createElement(tag); e.textContent = content; if (cls) e.className = cls; return e; };
const personLabel = (pid) => (pid === null || pid === undefined ? 'unknown' : `id ${pid}`);  // video crops: unknown
// times in UTC, to a tenth of a second: a track lasts seconds
const clock = (iso) => (iso ? new Date(iso).toISOString().slice(11, 21) : '–');
const timeRange = (s) => (s.first_time ? `${clock(s.first_time)}–${clock(s.last_time)}` : 'no time');
const ACTIVE_JOB = ['queued', 'running', 'cancelling'];

document.querySelectorAll('nav button').forEach((b) => b.onclick = () => {
  document.querySelectorAll('nav button, section').forEach((e) => e.classList.remove('active'));
  b.classList.add('active'); $(b.dataset.tab).classList.add('active');
  if (b.dataset.tab === 'gallery') loadGallery();
  if (b.dataset.tab === 'admin') loadJobs();
  if (b.dataset.tab === 'videos') loadVideoJobs();
  if (b.dataset.tab === 'identities') loadIdentities();
});

async function refreshStatus() {
  try { const r = await fetch('/readyz', { headers: keyHeaders() }); const b = await r.json();
    $('status').textContent = r.ok ? `model ${b.model_id} · ${b.gallery_vectors} gallery images · ${b.backend}` : b.detail || b.status;
  } catch (e) { $('status').textContent = 'service unreachable'; }
}

// ---- search ---------------------------------------------------------------------------------------------------
const drop = $('drop');
drop.onclick = () => $('query-file').click();
$('query-file').onchange = (e) => e.target.files.length && search([...e.target.files]);
drop.ondragover = (e) => { e.preventDefault(); drop.classList.add('over'); };
drop.ondragleave = () => drop.classList.remove('over');
drop.ondrop = (e) => { e.preventDefault(); drop.classList.remove('over'); if (e.dataTransfer.files.length) search([...e.dataTransfer.files]); };

function card(src, lines, cls) {
  const c = document.createElement('div'); c.className = 'card ' + cls;
  const img = document.createElement('img'); img.alt = lines[0]; c.appendChild(img);
  if (src.startsWith('blob:')) img.src = src;
  else fetch(src, { headers: keyHeaders() }).then((r) => r.ok ? r.blob() : null)
    .then((b) => { if (b) img.src = URL.createObjectURL(b); });
  lines.forEach((l) => c.appendChild(text('div', l)));
  return c;
}

// the model's per-part visibility of the query: one cell per LA part (a band of rows), darker = seen
function visibilityStrip(visibility) {
  const s = document.createElement('div'); s.className = 'vis-strip'; s.id = 'visibility';
  s.title = 'what the model sees of the query, per band of rows';
  visibility.forEach((v, p) => {
    const cell = document.createElement('div'); cell.style.opacity = String(0.12 + 0.88 * v);
    cell.title = `part ${p + 1}: ${Math.round(100 * v)}% visible`; cell.dataset.visibility = String(v);
    s.appendChild(cell);
  });
  return s;
}

// one file, or several: with "one person" ticked they are one multi-shot query (group=true), else the first is asked
async function search(files) {
  files = [].concat(files);
  const group = files.length > 1 && $('group').checked;
  if (!group) files = files.slice(0, 1);
  const out = $('results'); out.replaceChildren(text('span', 'Searching…', 'muted'));
  const form = new FormData(); files.forEach((f) => form.append('images', f)); form.append('k', $('k').value || '10');
  if (group) form.append('group', 'true');
  if ($('min-score').value) form.append('min_score', $('min-score').value);
  if ($('exclude-cam').checked) { form.append('exclude_same_camera', 'true'); form.append('query_camera_id', $('query-cam').value || '0'); }
  if ($('by-sighting').checked) form.append('group_by', 'sighting');
  $('where-else').hidden = true;
  try {
    const body = await api('/v1/search', { method: 'POST', body: form });
    const res = body.results[0]; const known = $('query-pid').value;
    const best = res.matches[0];
    const verdict = res.no_match ? `No match (best score ${res.best_score?.toFixed(3) ?? '–'} < ${body.min_score.toFixed(3)})`
      : res.person_id === null ? `An unknown person (score ${res.best_score.toFixed(3)})` +
                                 (best.sighting_id != null ? `, sighting ${best.sighting_id}` : '')
        : `Person ${res.person_id} (score ${res.best_score.toFixed(3)})`;
    const strip = document.createElement('div'); strip.className = 'ranked'; strip.id = 'ranked';
    files.forEach((f, i) => strip.appendChild(card(URL.createObjectURL(f), [group ? `crop ${i + 1}` : 'query',
                                                                          known ? `id ${known}` : ''], 'query')));
    if (res.visibility) strip.appendChild(visibilityStrip(res.visibility));
    res.matches.forEach((m, i) => {
      // right or wrong only against a known person: an unknown one is neither
      const colour = known === '' || m.person_id === null ? '' : (String(m.person_id) === known ? 'match' : 'miss');
      const lines = [`#${i + 1}  ${m.score.toFixed(3)}`, personLabel(m.person_id), `cam ${m.camera_id}`];
      if (m.sighting) lines.push(timeRange(m.sighting), `${m.sighting.crop_count} crops`);
      if (m.sighting?.identity_id) lines.push(`identity ${m.sighting.identity_id}`);
      const c = card(m.thumbnail_url, lines, `${colour} ${m.above_threshold ? '' : 'below'} result${m.sighting ? ' wide' : ''}`);
      c.title = `${body.score_kind} ${m.score.toFixed(3)}, cosine ${m.cosine.toFixed(4)}`;
      if (m.sighting_id != null) {  // every crop is one (an upload: a sighting of one)
        c.classList.add('clickable'); c.dataset.sightingId = String(m.sighting_id);
        c.title += ` · sighting ${m.sighting_id}: click for where else this person was`;
        c.onclick = () => whereElse(m.sighting_id, $('where-else'));
      }
      strip.appendChild(c);
    });
    const how = res.visibility
      ? 'scored on the body parts both images show (the strip: what the model sees of the query, top to bottom)'
      : 'every body part counts alike';
    out.replaceChildren(text('div', verdict, 'verdict'), text('div', how, 'muted'), strip);
  } catch (e) { out.replaceChildren(text('span', e.message, 'error')); }
}

async function loadSamples() {
  try {
    const samples = await api('/v1/samples');
    if (!samples.length) return;
    $('samples').replaceChildren(...samples.map((s) => {
      const c = card(s.url, [`id ${s.person_id}`, `cam ${s.camera_id}`], 'query sample');
      c.title = 'search for this person'; c.classList.add('clickable');
      c.onclick = async () => {
        const blob = await (await fetch(s.url, { headers: keyHeaders() })).blob();
        $('query-pid').value = s.person_id; $('query-cam').value = s.camera_id;
        $('exclude-cam').checked = true;  // as the standard protocol: the same camera's shots do not count
        search(new File([blob], s.name, { type: blob.type }));
      };
      return c;
    }));
    $('samples-panel').hidden = false;
  } catch (e) { /* no samples: the panel stays hidden */ }
}
loadSamples();

// ---- gallery --------------------------------------------------------------------------------------------------
let offset = 0; const limit = 48;
async function loadGallery() {
  const q = new URLSearchParams({ offset, limit });
  if ($('g-pid').value) q.set('person_id', $('g-pid').value);
  if ($('g-cam').value) q.set('camera_id', $('g-cam').value);
  try {
    const body = await api('/v1/gallery?' + q);
    $('g-count').textContent = `${body.count} images · showing ${Math.min(offset + 1, body.count)}–${Math.min(offset + limit, body.count)}`;
    $('g-grid').replaceChildren(...body.data.map((g) => card(g.thumbnail_url, [`#${g.id}`, personLabel(g.person_id), `cam ${g.camera_id}`], 'gallery-item')));
  } catch (e) { $('g-grid').replaceChildren(text('span', e.message, 'error')); }
}
$('g-load').onclick = () => { offset = 0; loadGallery(); };
$('g-prev').onclick = () => { offset = Math.max(0, offset - limit); loadGallery(); };
$('g-next').onclick = () => { offset += limit; loadGallery(); };

// ---- upload ---------------------------------------------------------------------------------------------------
$('u-send').onclick = async () => {
  const files = $('u-files').files;
  if (!files.length || $('u-pid').value === '') { $('u-result').textContent = 'Pick images and give a person id.'; return; }
  const form = new FormData();
  [...files].forEach((f) => form.append('images', f));
  form.append('person_id', $('u-pid').value); form.append('camera_id', $('u-cam').value || '0');
  if ($('u-tags').value) form.append('tags', $('u-tags').value);
  try {
    const body = await api('/v1/gallery', { method: 'POST', body: form });
    $('u-result').textContent = `Added ${body.count} image(s): ids ${body.data.map((d) => d.id).join(', ')}`;
    refreshStatus();
  } catch (e) { $('u-result').textContent = e.message; }
};

// ---- admin ----------------------------------------------------------------------------------------------------
const adminHeaders = () => ({ 'Content-Type': 'application/json' });
$('a-start').onclick = async () => {
  const params = { data_dir: $('a-data').value, prune_mode: 'head_attn', head_rate: +$('a-head').value,
                   token_rate: +$('a-token').value, iter_nums: 2, final_finetune: +$('a-final').value };
  try { await api('/v1/admin/jobs', { method: 'POST', headers: adminHeaders(), body: JSON.stringify({ kind: 'prune', params }) }); loadJobs(); }
  catch (e) { $('a-jobs').replaceChildren(text('div', e.message, 'error')); }
};
async function activate(id) {
  try { await api(`/v1/admin/models/${id}/activate`, { method: 'POST', headers: adminHeaders() }); loadJobs(); }
  catch (e) { alert(e.message); }
}
// an adapt job: the labelled check set before and after (where one was given), and the label-free indicators
function adaptReport(m) {
  const pct = (v) => `${(100 * v).toFixed(1)}%`;
  const lines = [];
  if (m.check_mAP !== undefined) {
    const delta = m.check_before_mAP !== undefined ? m.check_mAP - m.check_before_mAP : undefined;
    const row = document.createElement('table'); row.className = 'adapt-check';
    row.innerHTML = '<tr><th>check set</th><th>before</th><th>after</th></tr>';
    [['mAP', 'mAP'], ['rank-1', 'rank1']].forEach(([label, key]) => {
      const tr = document.createElement('tr');
      [label, m[`check_before_${key}`], m[`check_${key}`]].forEach((v, i) => {
        const td = document.createElement('td'); td.textContent = i && v !== undefined ? (+v).toFixed(2) : (v ?? '–'); tr.appendChild(td);
      });
      row.appendChild(tr);
    });
    lines.push(row);
    if (delta !== undefined) lines.push(text('div', delta >= 0 ? `check mAP +${delta.toFixed(2)}` : `check mAP ${delta.toFixed(2)}: worse than the start`, delta >= 0 ? 'muted' : 'error'));
  }
  if (m.clusters !== undefined) {
    lines.push(text('div', `${m.clusters} clusters · ${pct(m.unclustered)} unclustered · largest ${pct(m.largest_cluster)}` +
                           (m.track_agreement !== undefined ? ` · track agreement ${pct(m.track_agreement)}` : ''), 'muted'));
  }
  return lines;
}
async function loadJobs() {
  if (!$('api-key').value) { $('a-jobs').replaceChildren(text('div', 'Enter the admin API key (top right) to see jobs.', 'muted')); return; }
  try {
    if (!$('a-data').value) $('a-data').value = (await api('/v1/admin/data-roots'))[0] ?? '';  // a folder jobs may read
    const body = await api('/v1/admin/jobs', { headers: adminHeaders() });
    $('a-jobs').replaceChildren(...body.data.map((j) => {
      const box = document.createElement('div'); box.className = 'panel';
      box.appendChild(text('div', `job ${j.id} · ${j.kind} · ${j.state} · ${Math.round(j.progress * 100)}%` +
                                  (j.metrics.mAP !== undefined ? ` · mAP ${(+j.metrics.mAP).toFixed(2)}` : '') + (j.error ? ` · ${j.error}` : '')));
      if (j.kind === 'adapt') adaptReport(j.metrics).forEach((line) => box.appendChild(line));
      const bar = document.createElement('progress'); bar.max = 1; bar.value = j.progress; box.appendChild(bar);
      if (j.result_model_id) { const b = text('button', `activate model ${j.result_model_id}`); b.onclick = () => activate(j.result_model_id); box.appendChild(b); }
      box.appendChild(text('pre', j.log_tail));
      return box;
    }));
    if (body.data.some((j) => ['queued', 'running', 'cancelling'].includes(j.state))) setTimeout(loadJobs, 2000);
  } catch (e) { $('a-jobs').replaceChildren(text('div', e.message, 'error')); }
}
// ---- sightings: "where else", and a sighting's crops -------------------------------------------------------------
const ranked = (id) => { const s = document.createElement('div'); s.className = 'ranked'; s.id = id; return s; };
const boxText = (b) => (b ? `box ${b.map(Math.round).slice(0, 2).join(',')} ${Math.round(b[2])}×${Math.round(b[3])}` : '');

// where else was this sighting's person: its crops pooled into one query (POST /v1/sightings/{id}/search)
async function whereElse(sightingId, out) {
  out.hidden = false; out.replaceChildren(text('span', `Where else was sighting ${sightingId}'s person? Searching…`, 'muted'));
  const q = new URLSearchParams({ k: $('k').value || '10' });
  if ($('min-score').value) q.set('min_score', $('min-score').value);
  try {
    const [sighting, body] = await Promise.all([api(`/v1/sightings/${sightingId}`),
                                                api(`/v1/sightings/${sightingId}/search?${q}`, { method: 'POST' })]);
    const res = body.results[0];
    const strip = ranked(`${out.id}-ranked`);
    strip.appendChild(card(sighting.crops[0].thumbnail_url, [`sighting ${sighting.id}`, `cam ${sighting.camera_id}`,
                                                            timeRange(sighting)], 'query wide'));
    res.matches.forEach((m, i) => {
      const c = card(m.thumbnail_url, [`#${i + 1}  ${m.score.toFixed(3)}`, personLabel(m.person_id), `cam ${m.camera_id}`,
                                       clock(m.timestamp), `sighting ${m.sighting_id}`],
                     `${m.above_threshold ? '' : 'below'} result wide`);
      c.dataset.sightingId = String(m.sighting_id);
      strip.appendChild(c);
    });
    const verdict = res.no_match ? `nothing at or above ${body.min_score.toFixed(3)} (faded: below it)`
                                 : `best ${res.best_score.toFixed(3)}; faded: below ${body.min_score.toFixed(3)}`;
    out.replaceChildren(text('div', `Where else: sighting ${sighting.id} (cam ${sighting.camera_id}, ` +
                                    `${timeRange(sighting)}, its ${sighting.crop_count} crops pooled)`, 'verdict'),
                        text('div', verdict, 'muted'), strip);
  } catch (e) { out.replaceChildren(text('span', e.message, 'error')); }
}

// a frame of a sighting's recording with every tracked box and its track id; a box whose track is a sighting
// searches for that person (where else), the others are drawn faded
const SVG = 'http://www.w3.org/2000/svg';
async function showFrame(sightingId, frame, out, answers) {
  out.hidden = false; out.replaceChildren(text('span', `Loading frame ${frame}…`, 'muted'));
  const asked = `${sightingId}:${frame}`; out.dataset.asked = asked;  // a later click wins over a slower answer
  try {
    const f = await api(`/v1/sightings/${sightingId}/frames/${frame}`);
    const view = document.createElement('div'); view.className = 'frame-view'; view.id = `${out.id}-view`;
    const img = document.createElement('img'); img.alt = `frame ${f.frame}`;
    const r = await fetch(f.image_url, { headers: keyHeaders() });
    if (!r.ok) throw new Error(`the frame's image: ${r.status} ${(await r.json().catch(() => ({}))).detail || ''}`);
    const blob = await r.blob();
    if (out.dataset.asked !== asked) return;
    if (out.dataset.blob) URL.revokeObjectURL(out.dataset.blob);  // the frame it replaces
    img.src = out.dataset.blob = URL.createObjectURL(blob);
    const svg = document.createElementNS(SVG, 'svg'); svg.setAttribute('viewBox', `0 0 ${f.width} ${f.height}`);
    f.boxes.forEach((b) => {
      const g = document.createElementNS(SVG, 'g');
      g.setAttribute('class', `track${b.sighting_id === sightingId ? ' this' : ''}${b.sighting_id ? ' linked' : ''}`);
      g.dataset.trackId = String(b.track_id);
      const r = document.createElementNS(SVG, 'rect');
      [['x', b.x], ['y', b.y], ['width', b.w], ['height', b.h]].forEach(([k, v]) => r.setAttribute(k, v));
      const label = document.createElementNS(SVG, 'text');
      label.setAttribute('x', b.x + 2); label.setAttribute('y', Math.max(12, b.y - 4));
      label.textContent = b.sighting_id ? `track ${b.track_id} · sighting ${b.sighting_id}` : `track ${b.track_id}`;
      const tip = document.createElementNS(SVG, 'title');
      tip.textContent = b.sighting_id ? `search for this person (sighting ${b.sighting_id})` : 'not a sighting you can search';
      g.append(r, label, tip);
      if (b.sighting_id) { g.dataset.sightingId = String(b.sighting_id); g.onclick = () => whereElse(b.sighting_id, answers); }
      svg.appendChild(g);
    });
    view.append(img, svg);
    const step = (to, label) => { const btn = text('button', label); btn.disabled = to < f.first_frame || to > f.last_frame;
                                  btn.onclick = () => showFrame(sightingId, to, out, answers); return btn; };
    out.replaceChildren(text('div', `Frame ${f.frame} (track frames ${f.first_frame}–${f.last_frame}): ` +
                                    'click a person to search for them', 'muted'),
                        step(f.frame - 10, '◀ 10'), step(f.frame - 1, '◀ 1'), step(f.frame + 1, '1 ▶'),
                        step(f.frame + 10, '10 ▶'), view);
  } catch (e) { if (out.dataset.asked === asked) out.replaceChildren(text('span', e.message, 'error')); }
}

// a sighting's crops in frame order, each with its frame, time and box; a crop opens its frame (a video sighting
// whose recording the server keeps)
async function showSighting(sightingId, out) {
  out.hidden = false; out.replaceChildren(text('span', `Loading sighting ${sightingId}…`, 'muted'));
  try {
    const s = await api(`/v1/sightings/${sightingId}`);
    const crops = [...s.crops].sort((a, b) => (a.frame ?? 0) - (b.frame ?? 0));
    const strip = ranked(`${out.id}-crops`);
    const answers = document.createElement('div'); answers.id = `${out.id}-where`;
    const frameOut = document.createElement('div'); frameOut.id = `${out.id}-frame`; frameOut.hidden = true;
    crops.forEach((c) => {
      const item = card(c.thumbnail_url, [c.frame === null ? 'no frame' : `frame ${c.frame}`, clock(c.timestamp),
                                          boxText(c.box)], 'crop wide');
      if (c.frame !== null && s.video) { item.title = 'show its frame'; item.onclick = () => showFrame(s.id, c.frame, frameOut, answers); }
      strip.appendChild(item);
    });
    const ask = text('button', 'Where else was this person?'); ask.onclick = () => whereElse(s.id, answers);
    const about = [`Sighting ${s.id}`, `cam ${s.camera_id}`, s.first_time ? `${s.first_time.slice(0, 10)} ${timeRange(s)} UTC` : 'no time',
                   s.video ? `${s.video} track ${s.track_id}` : 'an uploaded crop',
                   `${s.crop_count} crops` + (s.frame_count ? ` over ${s.frame_count} frames` : ''),
                   s.identity_id ? `identity ${s.identity_id}` : 'no identity yet'];
    const title = text('div', about.join(' · '), 'verdict'); title.title = s.video;
    out.replaceChildren(title,
                        text('div', 'its crops in frame order: frame number, time, box in the frame (x,y w×h, pixels)' +
                                    (s.video ? '; click one for its frame' : ''), 'muted'),
                        strip, frameOut, ask, answers);
  } catch (e) { out.replaceChildren(text('span', e.message, 'error')); }
}

// ---- videos ---------------------------------------------------------------------------------------------------
// ingest jobs are followed on the admin jobs routes, so the page needs the admin key for them, as the admin tab does
const videoJobs = new Map();  // job id -> the job as last fetched
let showWhenDone = null;  // the job uploaded from this page: its sightings are shown when it succeeds
let videoPoll = null;

$('v-send').onclick = async () => {
  const video = $('v-file').files[0];
  if (!video || $('v-cam').value === '' || !$('v-start').value.trim()) {
    $('v-result').replaceChildren(text('span', 'Pick a recording and give its camera and start time.', 'error')); return;
  }
  const form = new FormData();
  form.append('video', video); form.append('camera_id', $('v-cam').value);
  form.append('start_time', $('v-start').value.trim()); form.append('max_crops', $('v-max').value || '8');
  if ($('v-boxes').files[0]) form.append('boxes', $('v-boxes').files[0]);
  $('v-result').replaceChildren(text('span', `Uploading ${video.name}…`, 'muted'));
  try {
    const { status, body: job } = await request('/v1/videos', { method: 'POST', body: form });
    $('v-result').replaceChildren(text('span', status === 200
      ? `${video.name} was ingested on camera ${job.params.camera_id} already (or is being): job ${job.id}.`
      : `${video.name}: ingest job ${job.id} started.`));
    videoJobs.set(job.id, job); showWhenDone = job.id;
    renderVideoJobs();
    if (job.state === 'succeeded') { showWhenDone = null; showVideoSightings(job); }
    followVideoJobs();
  } catch (e) { $('v-result').replaceChildren(text('span', e.message, 'error')); }
};

function jobPanel(j) {
  const box = document.createElement('div'); box.className = 'panel job'; box.id = `v-job-${j.id}`;
  const done = j.metrics.sightings !== undefined
    ? ` · ${j.metrics.sightings} sightings, ${j.metrics.crops} crops from ${j.metrics.frames} frames`
    : (j.current.frames !== undefined ? ` · ${j.current.frames} frames, ${j.current.sightings ?? 0} sightings so far` : '');
  box.appendChild(text('div', `job ${j.id} · camera ${j.params.camera_id} · ${j.state} · ${Math.round(j.progress * 100)}%` +
                              done + (j.error ? ` · ${j.error}` : ''), 'job-line'));
  const bar = document.createElement('progress'); bar.max = 1; bar.value = j.progress; box.appendChild(bar);
  if (ACTIVE_JOB.includes(j.state) && j.state !== 'cancelling') {
    const cancel = text('button', 'Cancel'); cancel.className = 'cancel'; cancel.onclick = () => cancelJob(j.id); box.appendChild(cancel);
  }
  if (j.state === 'succeeded') { const b = text('button', 'Show sightings'); b.onclick = () => showVideoSightings(j); box.appendChild(b); }
  return box;
}
function renderVideoJobs() {
  $('v-jobs').replaceChildren(...[...videoJobs.values()].sort((a, b) => b.id - a.id).map(jobPanel));
}
const missingAdminKey = () => {
  $('v-key').hidden = !!$('api-key').value;
  return !$('api-key').value;
};

async function loadVideoJobs() {
  if (missingAdminKey()) { followVideoJobs(); return; }
  try {
    const body = await api('/v1/admin/jobs?limit=100');
    body.data.filter((j) => j.kind === 'ingest').forEach((j) => videoJobs.set(j.id, j));
    renderVideoJobs();
    if (!videoJobs.size) $('v-jobs').replaceChildren(text('div', 'No video ingested yet.', 'muted'));
    followVideoJobs();
  } catch (e) { $('v-jobs').replaceChildren(text('div', e.message, 'error')); }
}

// every second while a job runs: its progress (GET /v1/admin/jobs/{id}); waits for the key when it is missing
async function followVideoJobs() {
  clearTimeout(videoPoll);
  const active = [...videoJobs.values()].filter((j) => ACTIVE_JOB.includes(j.state));
  if (!active.length) return;
  if (missingAdminKey()) { videoPoll = setTimeout(followVideoJobs, 1000); return; }
  try {
    for (const j of active) {
      const now = await api(`/v1/admin/jobs/${j.id}`);
      videoJobs.set(now.id, now);
      if (now.id === showWhenDone && !ACTIVE_JOB.includes(now.state)) {
        showWhenDone = null;
        if (now.state === 'succeeded') showVideoSightings(now);
      }
    }
    renderVideoJobs();
  } catch (e) { $('v-result').replaceChildren(text('span', `Following the job: ${e.message}`, 'error')); }
  videoPoll = setTimeout(followVideoJobs, 1000);
}

async function cancelJob(id) {
  try { $('v-result').replaceChildren(text('span', (await api(`/v1/admin/jobs/${id}/cancel`, { method: 'POST' })).detail)); }
  catch (e) { $('v-result').replaceChildren(text('span', e.message, 'error')); }
  followVideoJobs();
}

// a finished job's sightings: the tracks of its recording on its camera
async function showVideoSightings(job) {
  const out = $('v-sightings'); out.hidden = false;
  const video = job.params.video_name;  // the name its sightings carry
  const q = new URLSearchParams({ video, camera_id: job.params.camera_id, limit: 100 });
  try {
    const body = await api(`/v1/sightings?${q}`);
    const strip = ranked('v-sightings-list');
    body.data.forEach((s) => {
      const c = card(`/v1/gallery/${s.best_image_id}/thumbnail`, [`sighting ${s.id}`, `cam ${s.camera_id}`, timeRange(s),
                                                                  `${s.crop_count} crops`], 'sighting wide clickable');
      c.dataset.sightingId = String(s.id); c.title = 'its crops, and where else this person was';
      c.onclick = () => showSighting(s.id, $('v-sighting'));
      strip.appendChild(c);
    });
    out.replaceChildren(text('div', `Job ${job.id}: ${body.count} sightings on camera ${job.params.camera_id}` +
                                    (body.count > body.data.length ? ` (the first ${body.data.length})` : '') +
                                    ' · click one for its crops', 'verdict'), strip);
  } catch (e) { out.replaceChildren(text('span', e.message, 'error')); }
}

// ---- identities -----------------------------------------------------------------------------------------------
let identityShown = null;
const identityName = (p) => p.name ?? `identity ${p.id}`;

async function loadIdentities() {
  const q = new URLSearchParams({ limit: 100 });
  if ($('i-named').value) q.set('named', $('i-named').value);
  try {
    const body = await api(`/v1/identities?${q}`);
    $('i-count').textContent = `${body.count} identities` + (body.count > body.data.length ? ` · showing the first ${body.data.length}` : '');
    $('i-list').replaceChildren(...body.data.map((p) => {
      const b = text('button', `${identityName(p)} · ${p.sighting_count} sightings · cam ${p.camera_ids.join(', ')} · ${timeRange(p)}`, 'identity');
      b.dataset.identityId = String(p.id); b.onclick = () => showIdentity(p.id);
      return b;
    }));
    if (!body.data.length) $('i-list').replaceChildren(text('div', 'No identities yet: the service finds them as it embeds and links the sightings of ingested videos.', 'muted'));
  } catch (e) { $('i-list').replaceChildren(text('div', e.message, 'error')); }
}
$('i-load').onclick = loadIdentities;

async function showIdentity(id) {
  try {
    const p = await api(`/v1/identities/${id}`);
    identityShown = p.id;
    $('i-detail').hidden = false; $('i-sighting').hidden = true; $('i-saved').textContent = '';
    $('i-title').textContent = `${identityName(p)} · ${p.sighting_count} sightings on ${p.camera_ids.length} camera(s)`;
    $('i-name').value = p.name ?? '';
    $('i-timeline').replaceChildren(timelineChart(p.timeline));
    $('i-preview').replaceChildren(text('span', 'Point at a bar: its best crop. Click: its crops.', 'muted'));
  } catch (e) { $('i-detail').hidden = false; $('i-timeline').replaceChildren(text('div', e.message, 'error')); }
}

$('i-save').onclick = async () => {
  const name = $('i-name').value.trim();
  try {
    const p = await api(`/v1/identities/${identityShown}`, { method: 'PATCH', headers: { 'Content-Type': 'application/json' },
                                                            body: JSON.stringify({ name: name || null }) });
    $('i-saved').className = 'muted'; $('i-saved').textContent = p.name ? `named ${p.name}` : 'name taken away';
    $('i-title').textContent = `${identityName(p)} · ${p.sighting_count} sightings on ${p.camera_ids.length} camera(s)`;
    loadIdentities();
  } catch (e) { $('i-saved').className = 'error'; $('i-saved').textContent = e.message; }
};

const SVG_NS = 'http://www.w3.org/2000/svg';
const svg = (tag, attrs = {}, content) => {
  const e = document.createElementNS(SVG_NS, tag);
  Object.entries(attrs).forEach(([k, v]) => e.setAttribute(k, String(v)));
  if (content !== undefined) e.textContent = content;
  return e;
};

// an identity's timeline: one row per camera, time across (UTC), each sighting a bar from its first to its last time
function timelineChart(sightings) {
  const timed = sightings.filter((s) => s.first_time && s.last_time);
  const wrap = document.createElement('div');
  if (!timed.length) { wrap.appendChild(text('div', 'None of its sightings has a time.', 'muted')); return wrap; }
  const cams = [...new Set(timed.map((s) => s.camera_id))].sort((a, b) => a - b);
  const t0 = Math.min(...timed.map((s) => Date.parse(s.first_time)));
  const span = Math.max(Math.max(...timed.map((s) => Date.parse(s.last_time))) - t0, 1000);  // at least a second wide
  const left = 64, right = 20, top = 6, rowHeight = 30, width = 760, plotWidth = width - left - right;
  const height = top + rowHeight * cams.length + 30;
  const x = (iso) => left + plotWidth * (Date.parse(iso) - t0) / span;
  const chart = svg('svg', { id: 'timeline', width, height, viewBox: `0 0 ${width} ${height}`, role: 'img',
                             'aria-label': 'sightings by camera over time' });
  cams.forEach((c, row) => {
    const y = top + row * rowHeight;
    chart.appendChild(svg('rect', { x: left, y, width: plotWidth, height: rowHeight, class: row % 2 ? 'lane odd' : 'lane' }));
    chart.appendChild(svg('text', { x: left - 8, y: y + rowHeight / 2 + 4, 'text-anchor': 'end', class: 'axis' }, `cam ${c}`));
  });
  const bottom = top + rowHeight * cams.length;
  for (let i = 0; i <= 4; i += 1) {
    const at = new Date(t0 + span * i / 4).toISOString();
    chart.appendChild(svg('line', { x1: x(at), x2: x(at), y1: top, y2: bottom + 4, class: 'tick' }));
    chart.appendChild(svg('text', { x: x(at), y: bottom + 18, 'text-anchor': i === 0 ? 'start' : i === 4 ? 'end' : 'middle',
                                    class: 'axis' }, clock(at)));
  }
  timed.forEach((s) => {
    const x0 = x(s.first_time);
    const bar = svg('rect', { x: x0, y: top + cams.indexOf(s.camera_id) * rowHeight + 6, width: Math.max(x(s.last_time) - x0, 4),
                              height: rowHeight - 12, rx: 3, class: 'sighting', 'data-sighting-id': s.id });
    bar.appendChild(svg('title', {}, `sighting ${s.id} · cam ${s.camera_id} · ${timeRange(s)} · ${s.crop_count} crops`));
    bar.onmouseenter = () => previewSighting(s, bar);
    bar.onclick = () => { previewSighting(s, bar); showSighting(s.id, $('i-sighting')); };
    chart.appendChild(bar);
  });
  wrap.appendChild(chart);
  wrap.appendChild(text('div', `${new Date(t0).toISOString().slice(0, 10)}, UTC` +
                               (timed.length < sightings.length ? ` · ${sightings.length - timed.length} sightings without a time not drawn` : ''), 'muted'));
  return wrap;
}

function previewSighting(s, bar) {
  document.querySelectorAll('#timeline rect.sighting.selected').forEach((b) => b.classList.remove('selected'));
  bar.classList.add('selected');
  const c = card(`/v1/gallery/${s.best_image_id}/thumbnail`, [`sighting ${s.id}`, `cam ${s.camera_id}`, timeRange(s)], 'wide');
  c.id = 'i-preview-card';
  $('i-preview').replaceChildren(c);
}

refreshStatus(); setInterval(refreshStatus, 10000);
