const $ = (id) => document.getElementById(id);
// the key (read, write or admin, whichever the server wants) goes with every request, images included
const keyHeaders = (extra = {}) => ($('api-key').value ? { 'X-API-Key': $('api-key').value, ...extra } : extra);
const api = async (path, options = {}) => {
  const r = await fetch(path, { ...options, headers: keyHeaders(options.headers) });
  const body = r.headers.get('content-type')?.includes('json') ? await r.json() : await r.text();
  if (!r.ok) throw new Error(typeof body === 'object' ? JSON.stringify(body.detail ?? body) : body);
  return body;
};
const text = (tag, content, cls) => { const e = document.createElement(tag); e.textContent = content; if (cls) e.className = cls; return e; };

document.querySelectorAll('nav button').forEach((b) => b.onclick = () => {
  document.querySelectorAll('nav button, section').forEach((e) => e.classList.remove('active'));
  b.classList.add('active'); $(b.dataset.tab).classList.add('active');
  if (b.dataset.tab === 'gallery') loadGallery();
  if (b.dataset.tab === 'admin') loadJobs();
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
  try {
    const body = await api('/v1/search', { method: 'POST', body: form });
    const res = body.results[0]; const known = $('query-pid').value;
    const verdict = res.no_match ? `No match (best score ${res.best_score?.toFixed(3) ?? '–'} < ${body.min_score.toFixed(3)})`
                                 : `Person ${res.person_id} (score ${res.best_score.toFixed(3)})`;
    const strip = document.createElement('div'); strip.className = 'ranked'; strip.id = 'ranked';
    files.forEach((f, i) => strip.appendChild(card(URL.createObjectURL(f), [group ? `crop ${i + 1}` : 'query',
                                                                          known ? `id ${known}` : ''], 'query')));
    if (res.visibility) strip.appendChild(visibilityStrip(res.visibility));
    res.matches.forEach((m, i) => {
      const colour = known === '' ? '' : (String(m.person_id) === known ? 'match' : 'miss');
      const c = card(m.thumbnail_url, [`#${i + 1}  ${m.score.toFixed(3)}`, `id ${m.person_id}`, `cam ${m.camera_id}`],
                     `${colour} ${m.above_threshold ? '' : 'below'} result`);
      c.title = `${body.score_kind} ${m.score.toFixed(3)}, cosine ${m.cosine.toFixed(4)}`;
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
    $('g-grid').replaceChildren(...body.data.map((g) => card(g.thumbnail_url, [`#${g.id}`, `id ${g.person_id}`, `cam ${g.camera_id}`], 'gallery-item')));
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
async function loadJobs() {
  if (!$('api-key').value) { $('a-jobs').replaceChildren(text('div', 'Enter the admin API key (top right) to see jobs.', 'muted')); return; }
  try {
    if (!$('a-data').value) $('a-data').value = (await api('/v1/admin/data-roots'))[0] ?? '';  // a folder jobs may read
    const body = await api('/v1/admin/jobs', { headers: adminHeaders() });
    $('a-jobs').replaceChildren(...body.data.map((j) => {
      const box = document.createElement('div'); box.className = 'panel';
      box.appendChild(text('div', `job ${j.id} · ${j.kind} · ${j.state} · ${Math.round(j.progress * 100)}%` +
                                  (j.metrics.mAP !== undefined ? ` · mAP ${(+j.metrics.mAP).toFixed(2)}` : '') + (j.error ? ` · ${j.error}` : '')));
      const bar = document.createElement('progress'); bar.max = 1; bar.value = j.progress; box.appendChild(bar);
      if (j.result_model_id) { const b = text('button', `activate model ${j.result_model_id}`); b.onclick = () => activate(j.result_model_id); box.appendChild(b); }
      box.appendChild(text('pre', j.log_tail));
      return box;
    }));
    if (body.data.some((j) => ['queued', 'running', 'cancelling'].includes(j.state))) setTimeout(loadJobs, 2000);
  } catch (e) { $('a-jobs').replaceChildren(text('div', e.message, 'error')); }
}
refreshStatus(); setInterval(refreshStatus, 10000);
