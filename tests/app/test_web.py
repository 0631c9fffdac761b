"""The web page in real headless Chromium: a query shows ranked thumbnails; an upload appears in the gallery; a
recording uploaded on the Videos tab becomes sightings, searched by sighting, and an identity's timeline is drawn."""
import datetime as dt
import os
import shutil
import subprocess
import sys
import time

import httpx
import pytest

from tests.app.conftest import ROOT, files_for, free_port, ready_with, start_server, wait_for

CHROMIUM, DRIVER = shutil.which('chromium'), shutil.which('chromedriver')
pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not (CHROMIUM and DRIVER), reason='needs Debian packages chromium and chromium-driver (make test installs them)')]


@pytest.fixture(scope='module')
def web_dir(tmp_path_factory):
    return tmp_path_factory.mktemp('web')


@pytest.fixture(scope='module')
def server(web_dir, service_model, dataset, learnable_root):
    port = free_port()
    data_dir = web_dir
    # as make demo serves: the dataset is the first data root, the folder the admin tab suggests
    proc = start_server(data_dir, service_model, port, AMG_SAMPLE_QUERIES_DIR=str(learnable_root / 'query'),
                        AMG_SAMPLE_QUERIES='6', AMG_DATA_ROOTS=f'{learnable_root},{data_dir}')
    base = f'http://127.0.0.1:{port}'
    gallery = [g for g in dataset.gallery if g.pid > 0]
    with httpx.Client(base_url=base, timeout=60) as client:
        r = client.post('/v1/gallery', files=files_for([g.path for g in gallery]), data={
            'person_id': ','.join(str(g.pid) for g in gallery), 'camera_id': ','.join(str(g.camid) for g in gallery)})
        assert r.status_code == 201
    yield base
    proc.terminate()
    proc.wait()


@pytest.fixture(scope='module')
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ('--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
                 '--disable-background-networking', '--disable-component-update', '--disable-sync',
                 '--window-size=1200,900'):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


def _wait(condition, timeout=60):
    from selenium.common.exceptions import StaleElementReferenceException
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            value = condition()
        except StaleElementReferenceException:  # the page re-rendered under us: look again
            value = None
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError('timed out waiting for the page')


def test_search_shows_ranked_thumbnails(server, browser, dataset, tmp_path):
    from selenium.webdriver.common.by import By
    query = dataset.query[0]
    browser.get(server + '/')
    browser.find_element(By.ID, 'query-pid').send_keys(str(query.pid))
    browser.find_element(By.ID, 'query-file').send_keys(query.path)
    cards = _wait(lambda: browser.find_elements(By.CSS_SELECTOR, '#ranked .card.result'))
    assert len(cards) == 10
    scores = [float(c.text.split()[1]) for c in cards]
    assert scores == sorted(scores, reverse=True)
    classes = [c.get_attribute('class') for c in cards]
    assert all(('match' in c) != ('miss' in c) for c in classes)  # every result coloured by correctness
    _wait(lambda: all(browser.execute_script('return arguments[0].naturalWidth', c.find_element(By.TAG_NAME, 'img'))
                      for c in cards))  # thumbnails loaded
    shot = tmp_path / "search.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    assert browser.find_element(By.CLASS_NAME, 'verdict').text


def test_several_crops_are_one_multi_shot_query(server, browser, dataset):
    from selenium.webdriver.common.by import By
    pid = dataset.query[0].pid
    shots = [q.path for q in dataset.query if q.pid == pid][:2]
    browser.get(server + '/')
    browser.find_element(By.ID, 'query-pid').send_keys(str(pid))
    browser.find_element(By.ID, 'query-file').send_keys('\n'.join(shots))  # both files at once
    _wait(lambda: len(browser.find_elements(By.CSS_SELECTOR, '#ranked .card.query')) == 2)
    queries = browser.find_elements(By.CSS_SELECTOR, '#ranked .card.query')
    assert [q.text.split()[:2] for q in queries] == [['crop', '1'], ['crop', '2']]
    assert len(browser.find_elements(By.CSS_SELECTOR, '#ranked .card.result')) == 10  # one ranked list


def test_a_model_with_the_visibility_head_shows_what_it_sees_of_the_query(tmp_path_factory, browser, dataset,
                                                                         visibility_checkpoint):
    from selenium.webdriver.common.by import By
    port = free_port()
    proc = start_server(tmp_path_factory.mktemp('web-vis'), visibility_checkpoint, port)
    try:
        base = f'http://127.0.0.1:{port}'
        gallery = [g for g in dataset.gallery if g.pid > 0][:20]
        query = dataset.query[0]
        with httpx.Client(base_url=base, timeout=60) as client:
            assert client.post('/v1/gallery', files=files_for([g.path for g in gallery]),
                               data={'person_id': ','.join(str(g.pid) for g in gallery)}).status_code == 201
            want = client.post('/v1/search', files=files_for([query.path]), headers={'X-API-Key': 'k'}).json()
        visibility = want['results'][0]['visibility']
        browser.get(base + '/')
        browser.find_element(By.ID, 'query-file').send_keys(query.path)
        cells = _wait(lambda: browser.find_elements(By.CSS_SELECTOR, '#ranked #visibility div'))
        assert [float(c.get_attribute('data-visibility')) for c in cells] == visibility  # one cell per part
        assert 'parts both images show' in browser.find_element(By.ID, 'results').text
    finally:
        proc.terminate()
        proc.wait()


def test_upload_appears_in_the_gallery(server, browser, dataset):
    from selenium.webdriver.common.by import By
    browser.get(server + '/')
    browser.find_element(By.CSS_SELECTOR, 'nav button[data-tab=upload]').click()
    browser.find_element(By.ID, 'u-files').send_keys(dataset.query[1].path)
    browser.find_element(By.ID, 'u-pid').send_keys('4242')
    browser.find_element(By.ID, 'u-send').click()
    _wait(lambda: 'Added 1' in browser.find_element(By.ID, 'u-result').text)
    browser.find_element(By.CSS_SELECTOR, 'nav button[data-tab=gallery]').click()
    browser.find_element(By.ID, 'g-pid').send_keys('4242')
    browser.find_element(By.ID, 'g-load').click()
    texts = _wait(lambda: [i.text for i in browser.find_elements(By.CSS_SELECTOR, '#g-grid .gallery-item')
                           if 'id 4242' in i.text])
    assert len(texts) == 1


def test_a_sample_query_is_one_click_away(server, browser):
    from selenium.webdriver.common.by import By
    samples = httpx.get(server + '/v1/samples').json()
    assert len(samples) == 6 and len({s['person_id'] for s in samples}) == 6
    assert httpx.get(server + '/v1/samples/..%2F..%2Fetc%2Fpasswd').status_code == 404
    browser.get(server + '/')
    strip = _wait(lambda: browser.find_elements(By.CSS_SELECTOR, '#samples .card.sample'))
    assert len(strip) == 6
    strip[2].click()
    cards = _wait(lambda: browser.find_elements(By.CSS_SELECTOR, '#ranked .card.result'))
    assert len(cards) == 10
    assert browser.find_element(By.ID, 'query-pid').get_attribute('value') == str(samples[2]['person_id'])
    classes = [c.get_attribute('class') for c in cards]
    assert all(('match' in c) != ('miss' in c) for c in classes)  # coloured by the known person
    # the same camera's shots are excluded, as the standard protocol does
    assert all(f"cam {samples[2]['camera_id']}" not in c.text.split('\n') for c in cards)


def test_the_newcomers_path_a_sample_query_then_a_prune_job_from_the_admin_tab(server, browser, learnable_root):
    """What make demo offers: one click on a sample ranks the gallery (the README's picture is this page), then the
    admin tab's suggested folder starts a prune job (a tiny one: no final fine-tuning) that the page follows to
    the end."""
    from selenium.webdriver.common.by import By
    browser.get(server + '/')
    _wait(lambda: browser.find_elements(By.CSS_SELECTOR, '#samples .card.sample'))[0].click()
    cards = _wait(lambda: browser.find_elements(By.CSS_SELECTOR, '#ranked .card.result'))
    _wait(lambda: all(browser.execute_script('return arguments[0].naturalWidth', c.find_element(By.TAG_NAME, 'img'))
                      for c in cards))
    picture = ROOT / 'docs' / 'img' / 'page.png'
    picture.parent.mkdir(exist_ok=True)
    browser.save_screenshot(str(picture))
    assert picture.stat().st_size > 10_000

    browser.find_element(By.ID, 'api-key').send_keys('k')
    browser.find_element(By.CSS_SELECTOR, 'nav button[data-tab=admin]').click()
    folder = browser.find_element(By.ID, 'a-data')
    _wait(lambda: folder.get_attribute('value'))
    assert folder.get_attribute('value') == str(learnable_root.resolve())
    final = browser.find_element(By.ID, 'a-final')
    final.clear()
    final.send_keys('0')
    browser.find_element(By.ID, 'a-start').click()
    status = _wait(lambda: next((t for t in [browser.find_element(By.ID, 'a-jobs').text]
                                 if any(s in t for s in ('succeeded', 'failed', 'error', 'interrupted'))), None),
                   timeout=600)
    assert 'job 1 · prune · succeeded · 100%' in status, status
    assert browser.find_elements(By.XPATH, "//div[@id='a-jobs']//button[starts-with(text(), 'activate model')]")


def test_an_adapt_job_shows_its_check_set_before_and_after_and_its_clustering(server, web_dir, browser):
    """The admin tab's view of an adapt job: the labelled check set's mAP and rank-1 before and after, the change,
    and the label-free indicators (a finished job's metrics, as reid.adapt reports them, put in the database)."""
    from selenium.webdriver.common.by import By
    from storage import crud
    from storage.db import JobKind, JobState, make_engine, make_sessionmaker
    Session = make_sessionmaker(make_engine(f'sqlite:///{web_dir / "amg.db"}'))
    with Session.begin() as s:
        job = crud.create_job(session=s, kind=JobKind.ADAPT, params={'data_dir': '/footage'})
        job.state, job.progress = JobState.SUCCEEDED, 1.0
        job.metrics = dict(check_before_mAP=7.93, check_mAP=32.53, check_before_rank1=20.0, check_rank1=55.5,
                           clusters=41, unclustered=0.125, largest_cluster=0.06, track_agreement=0.9)
        job_id = job.id
    browser.get(server + '/')
    browser.find_element(By.ID, 'api-key').send_keys('k')
    browser.find_element(By.CSS_SELECTOR, 'nav button[data-tab=admin]').click()
    panel = _wait(lambda: next((p for p in browser.find_elements(By.CSS_SELECTOR, '#a-jobs .panel')
                                if p.text.startswith(f'job {job_id} · adapt')), None))
    rows = [[td.text for td in tr.find_elements(By.TAG_NAME, 'td')]
            for tr in panel.find_elements(By.CSS_SELECTOR, 'table.adapt-check tr')[1:]]
    assert rows == [['mAP', '7.93', '32.53'], ['rank-1', '20.00', '55.50']]
    assert 'check mAP +24.60' in panel.text
    assert '41 clusters · 12.5% unclustered · largest 6.0% · track agreement 90.0%' in panel.text


# ---- videos, sightings and identities: one recording uploaded from the page, then searched and drawn ----------------
ADMIN = {'X-API-Key': 'k'}  # start_server's AMG_API_KEY


@pytest.fixture(scope='module')
def recording(tmp_path_factory):
    """test_ingest's tiny one-camera video (three people, 6 s) and its ground-truth MOT boxes."""
    for module in ('av', 'cv2', 'trackers'):
        pytest.importorskip(module, reason='video tests skipped: the video extra is not installed')
    from tests.app.test_ingest import ONE_CAMERA
    from video.synthetic import generate_videos
    root = tmp_path_factory.mktemp('web-recording')
    return generate_videos(root, ONE_CAMERA)[1], root / 'cam1.gt.txt'


@pytest.fixture(scope='module')
def video_server(tmp_path_factory, service_model, recording):
    """A service whose gallery is empty but for what the page ingests: its sightings are all a search finds."""
    port = free_port()
    proc = start_server(tmp_path_factory.mktemp('web-video'), service_model, port, AMG_SYNC_SECONDS='0.2')
    yield f'http://127.0.0.1:{port}'
    proc.terminate()
    proc.wait()


def _clock(iso: str) -> str:
    """As the page writes a time: UTC, to a tenth of a second."""
    return dt.datetime.fromisoformat(iso).astimezone(dt.timezone.utc).strftime('%H:%M:%S.%f')[:10]


def _click_when_there(browser, css):
    from selenium.webdriver.common.by import By

    def click():
        found = browser.find_elements(By.CSS_SELECTOR, css)
        if found:
            found[0].click()
            return True
    _wait(click)


def _sighting_ids(cards):
    return [int(c.get_attribute('data-sighting-id')) for c in cards]


def test_a_recording_uploaded_on_the_videos_tab_becomes_sightings(video_server, browser, recording, tmp_path):
    from selenium.webdriver.common.by import By
    video, truth = recording
    browser.get(video_server + '/')
    browser.find_element(By.CSS_SELECTOR, 'nav button[data-tab=videos]').click()
    key_needed = browser.find_element(By.ID, 'v-key')
    assert key_needed.is_displayed() and 'admin API key' in key_needed.text  # no key typed yet

    # a file FFmpeg cannot open: the API's own detail, nothing queued
    garbage = tmp_path / 'garbage.mp4'
    garbage.write_bytes(b'\x00not a video' * 100)
    browser.find_element(By.ID, 'v-file').send_keys(str(garbage))
    browser.find_element(By.ID, 'v-cam').send_keys('4')
    browser.find_element(By.ID, 'v-start').send_keys('2026-05-01T08:00:00Z')
    browser.find_element(By.ID, 'v-send').click()
    refused = _wait(lambda: next((e.text for e in browser.find_elements(By.CSS_SELECTOR, '#v-result .error')), None))
    assert refused.startswith('video: ') and 'garbage.mp4' in refused, refused

    browser.find_element(By.ID, 'v-file').clear()
    browser.find_element(By.ID, 'v-file').send_keys(str(video))
    browser.find_element(By.ID, 'v-boxes').send_keys(str(truth))
    crops = browser.find_element(By.ID, 'v-max')
    crops.clear()
    crops.send_keys('4')
    browser.find_element(By.ID, 'v-send').click()
    _wait(lambda: 'ingest job' in browser.find_element(By.ID, 'v-result').text)
    assert key_needed.is_displayed()  # the job runs; following it waits for the admin key
    browser.find_element(By.ID, 'api-key').send_keys('k')
    line = _wait(lambda: next((e.text for e in browser.find_elements(By.CSS_SELECTOR, '#v-jobs .job-line')
                               if any(s in e.text for s in ('succeeded', 'failed', 'cancelled'))), None), timeout=180)
    jobs = httpx.get(video_server + '/v1/admin/jobs', headers=ADMIN).json()['data']
    assert len(jobs) == 1  # the refused file queued nothing
    job, made = jobs[0], jobs[0]['metrics']
    assert line == (f"job {job['id']} · camera 4 · succeeded · 100% · {made['sightings']} sightings, "
                    f"{made['crops']} crops from {made['frames']} frames"), line
    assert browser.find_element(By.CSS_SELECTOR, f"#v-job-{job['id']} progress").get_attribute('value') == '1'
    assert not key_needed.is_displayed()

    # done: its sightings, then one sighting's crops in frame order
    cards = _wait(lambda: browser.find_elements(By.CSS_SELECTOR, '#v-sightings-list .card.sighting'))
    listed = httpx.get(video_server + '/v1/sightings', params={'camera_id': '4', 'limit': 100}).json()['data']
    assert made['sightings'] >= 3 and sorted(_sighting_ids(cards)) == sorted(s['id'] for s in listed)
    first = next(s for s in listed if s['id'] == _sighting_ids(cards)[0])
    assert cards[0].text.split('\n')[1:] == ['cam 4', f"{_clock(first['first_time'])}–{_clock(first['last_time'])}",
                                             f"{first['crop_count']} crops"]
    cards[0].click()
    shown = _wait(lambda: browser.find_elements(By.CSS_SELECTOR, '#v-sighting-crops .card'))
    stored = httpx.get(f"{video_server}/v1/sightings/{first['id']}").json()['crops']
    by_frame = sorted(stored, key=lambda c: c['frame'])
    assert [c.text.split('\n')[:2] for c in shown] == [[f"frame {c['frame']}", _clock(c['timestamp'])]
                                                       for c in by_frame]

    # a crop opens its frame: every tracked box drawn with its track, this sighting's marked; a person's box asks
    # where else that sighting's person was
    shown[0].click()
    drawn = _wait(lambda: browser.find_elements(By.CSS_SELECTOR, '#v-sighting-frame-view svg g.track'))
    frame = httpx.get(f"{video_server}/v1/sightings/{first['id']}/frames/{by_frame[0]['frame']}").json()
    assert sorted(int(g.get_attribute('data-track-id')) for g in drawn) == sorted(b['track_id'] for b in frame['boxes'])
    own = browser.find_elements(By.CSS_SELECTOR, '#v-sighting-frame-view svg g.this')
    assert [int(g.get_attribute('data-sighting-id')) for g in own] == [first['id']]
    assert _wait(lambda: browser.execute_script(
        "const i = document.querySelector('#v-sighting-frame-view img'); return i.complete && i.naturalWidth"))
    assert browser.execute_script("return document.querySelector('#v-sighting-frame-view img').naturalWidth") == \
        frame['width']
    own[0].find_element(By.TAG_NAME, 'rect').click()
    verdict = _wait(lambda: [e for e in browser.find_elements(By.CSS_SELECTOR, '#v-sighting-where .verdict')
                             if e.text.startswith('Where else')])
    assert verdict[0].text.startswith(f"Where else: sighting {first['id']} ")


def test_a_search_by_sighting_shows_camera_and_time_and_a_click_asks_where_else(video_server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    sightings = httpx.get(video_server + '/v1/sightings', params={'limit': 100}).json()['data']
    assert sightings, 'needs the recording the test above ingests'
    with httpx.Client(base_url=video_server, timeout=60) as client:  # the service embeds the worker's crops
        ready_with(client, 60, status='ready', gallery_vectors=sum(s['crop_count'] for s in sightings))
    query = tmp_path / 'crop.png'  # one of the video's own crops
    query.write_bytes(httpx.get(f"{video_server}/v1/gallery/{sightings[0]['best_image_id']}/image").content)
    want = httpx.post(video_server + '/v1/search', files=files_for([str(query)]),
                      data={'group_by': 'sighting', 'k': '10'}).json()['results'][0]['matches']

    browser.get(video_server + '/')
    browser.find_element(By.ID, 'by-sighting').click()
    browser.find_element(By.ID, 'query-file').send_keys(str(query))
    cards = _wait(lambda: browser.find_elements(By.CSS_SELECTOR, '#ranked .card.result'))
    assert _sighting_ids(cards) == [m['sighting_id'] for m in want]
    assert len(set(_sighting_ids(cards))) == len(cards) == len(sightings)  # one match per sighting, every one
    for c, m in zip(cards, want):
        lines = c.text.split('\n')
        assert lines[1:4] == ['unknown', 'cam 4', f"{_clock(m['sighting']['first_time'])}–"
                                                  f"{_clock(m['sighting']['last_time'])}"], lines
    assert 'null' not in browser.find_element(By.ID, 'results').text
    assert browser.find_element(By.CSS_SELECTOR, '#results .verdict').text.startswith('An unknown person')

    other = want[1]['sighting_id']
    cards[1].click()
    where = _wait(lambda: browser.find_elements(By.CSS_SELECTOR, '#where-else-ranked .card.result'))
    elsewhere = httpx.post(f'{video_server}/v1/sightings/{other}/search', params={'k': '10'}).json()
    assert _sighting_ids(where) == [m['sighting_id'] for m in elsewhere['results'][0]['matches']]
    assert where and other not in _sighting_ids(where)  # its own crops are left out
    assert browser.find_element(By.CSS_SELECTOR, '#where-else .verdict').text.startswith(f'Where else: sighting {other}')


def test_an_identitys_timeline_is_drawn_one_bar_per_sighting_and_it_can_be_named(video_server, browser):
    from selenium.webdriver.common.by import By

    def linked():
        sightings = httpx.get(video_server + '/v1/sightings', params={'limit': 100}).json()['data']
        return sightings if sightings and all(s['identity_id'] for s in sightings) else None
    wait_for(linked, 60, 'every sighting linked to an identity')
    identities = httpx.get(video_server + '/v1/identities', params={'limit': 100}).json()['data']
    chosen = max(identities, key=lambda p: p['sighting_count'])
    timeline = httpx.get(f"{video_server}/v1/identities/{chosen['id']}").json()['timeline']

    browser.get(video_server + '/')
    browser.find_element(By.CSS_SELECTOR, 'nav button[data-tab=identities]').click()
    rows = _wait(lambda: browser.find_elements(By.CSS_SELECTOR, '#i-list button.identity'))
    assert sorted(int(r.get_attribute('data-identity-id')) for r in rows) == sorted(p['id'] for p in identities)
    next(r for r in rows if int(r.get_attribute('data-identity-id')) == chosen['id']).click()
    bars = _wait(lambda: browser.find_elements(By.CSS_SELECTOR, '#timeline rect.sighting'))
    assert sorted(_sighting_ids(bars)) == sorted(s['id'] for s in timeline)  # one bar per sighting
    lanes = [t.text for t in browser.find_elements(By.CSS_SELECTOR, '#timeline text') if t.text.startswith('cam ')]
    assert lanes == [f'cam {c}' for c in sorted({s['camera_id'] for s in timeline})]  # one row per camera
    starts = {int(b.get_attribute('data-sighting-id')): float(b.get_attribute('x')) for b in bars}
    assert [starts[s['id']] for s in timeline] == sorted(starts.values())  # time runs left to right

    bars[0].click()  # its best crop, and its crops
    preview = _wait(lambda: browser.find_elements(By.CSS_SELECTOR, '#i-preview-card'))[0]
    assert preview.text.startswith(f'sighting {bars[0].get_attribute("data-sighting-id")}')
    clicked = next(s for s in timeline if s['id'] == _sighting_ids(bars)[0])
    assert len(_wait(lambda: browser.find_elements(By.CSS_SELECTOR, '#i-sighting-crops .card'))) == \
        clicked['crop_count']

    browser.find_element(By.ID, 'i-name').send_keys('visitor 7')
    browser.find_element(By.ID, 'i-save').click()
    _wait(lambda: browser.find_element(By.ID, 'i-saved').text == 'named visitor 7')
    assert httpx.get(f"{video_server}/v1/identities/{chosen['id']}").json()['name'] == 'visitor 7'
    assert _wait(lambda: [r for r in browser.find_elements(By.CSS_SELECTOR, '#i-list button.identity')
                          if r.text.startswith('visitor 7 · ')])


def test_an_ingest_cancelled_from_the_page_ends_as_its_answer_said(video_server, browser, recording):
    """Cancel right after the upload: a queued or running job is cancelled; one that finished first is answered by
    the API's 409, shown as it is."""
    from selenium.webdriver.common.by import By
    video, truth = recording
    browser.get(video_server + '/')
    browser.find_element(By.ID, 'api-key').send_keys('k')
    browser.find_element(By.CSS_SELECTOR, 'nav button[data-tab=videos]').click()
    browser.find_element(By.ID, 'v-file').send_keys(str(video))
    browser.find_element(By.ID, 'v-boxes').send_keys(str(truth))
    browser.find_element(By.ID, 'v-cam').send_keys('5')  # the same file on another camera: a new job
    browser.find_element(By.ID, 'v-start').send_keys('2026-05-01T09:00:00Z')
    browser.find_element(By.ID, 'v-send').click()
    result = browser.find_element(By.ID, 'v-result')
    job_id = int(_wait(lambda: 'ingest job' in result.text and result.text.split('ingest job ')[1].split(' ')[0]))
    _click_when_there(browser, f'#v-job-{job_id} button.cancel')  # the job list is redrawn every second
    answer = _wait(lambda: 'cancel' in result.text and result.text)

    def ended():
        job = httpx.get(f'{video_server}/v1/admin/jobs/{job_id}', headers=ADMIN).json()
        return job if job['state'] in ('succeeded', 'cancelled', 'failed') else None
    job = wait_for(ended, 120, f'job {job_id} to end')
    line = _wait(lambda: (lambda t: job['state'] in t and t)(
        browser.find_element(By.CSS_SELECTOR, f'#v-job-{job_id} .job-line').text))
    if answer == f'job {job_id}: cancel requested':
        assert job['state'] == 'cancelled', line
    else:  # it finished before the click
        assert job['state'] == 'succeeded' and answer.endswith('nothing to cancel'), answer
    assert not browser.find_elements(By.CSS_SELECTOR, f'#v-job-{job_id} button.cancel')


def test_make_demo_submits_its_recordings_once(video_server, recording, capsys):
    """The demo's path: recordings on the server (under AMG_DATA_ROOTS: conftest makes it the tests' temporary
    folders), submitted as admin ingest jobs once the service is ready; a second run gets the same job."""
    from app.serve import ingest_when_ready
    video, truth = recording
    body = dict(video_path=str(video), boxes_path=str(truth), camera_id=6, start_time='2026-01-05T08:00:00+00:00')
    ingest_when_ready(video_server, 'k', [body])
    ingest_when_ready(video_server, 'k', [body])
    said = capsys.readouterr().out.splitlines()
    assert len(said) == 2 and said[0].startswith('      demo video cam1.mp4 on camera 6: ingest job ')
    job_id = int(said[0].split('ingest job ')[1].split(' ')[0])
    assert said[1].startswith(f'      demo video cam1.mp4 on camera 6: ingest job {job_id} (')
    job = httpx.get(f'{video_server}/v1/admin/jobs/{job_id}', headers=ADMIN).json()
    assert job['kind'] == 'ingest' and job['params']['camera_id'] == 6


def test_the_demos_last_step_ingests_its_recordings_and_the_page_draws_a_timeline(tmp_path, service_model,
                                                                                   learnable_root, browser,
                                                                                   recording):
    """make demo's serve step (app.demo.serve_step), with the tests' tiny model and dataset in place of the demo's:
    its three recordings become sightings on cameras after the dataset's, linked into identities the page draws."""
    from selenium.webdriver.common.by import By

    from app.demo import DEMO_VIDEO, DEMO_VIDEO_FIRST_CAMERA
    port = free_port()
    run = ('import sys; from pathlib import Path; from app.demo import serve_step; '
           'serve_step(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), port=int(sys.argv[4]), '
           "backend='torch', api_key='k')")
    proc = subprocess.Popen([sys.executable, '-c', run, str(tmp_path), str(service_model), str(learnable_root),
                             str(port)], env=dict(os.environ, PYTHONPATH=str(ROOT), AMG_SYNC_SECONDS='0.2'),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f'http://127.0.0.1:{port}'
        cameras = list(range(DEMO_VIDEO_FIRST_CAMERA, DEMO_VIDEO_FIRST_CAMERA + DEMO_VIDEO['num_cams']))

        def ingested():
            try:
                jobs = httpx.get(base + '/v1/admin/jobs', headers=ADMIN).json()['data']
            except httpx.HTTPError:
                return None  # not serving yet
            done = [j for j in jobs if j['kind'] == 'ingest' and j['state'] not in ('queued', 'running')]
            return done if len(done) == len(cameras) else None
        jobs = wait_for(ingested, 240, "the demo's recordings ingested")
        assert {j['state'] for j in jobs} == {'succeeded'} and sorted(j['params']['camera_id'] for j in jobs) == cameras

        def linked():
            found = httpx.get(base + '/v1/sightings', params={'camera_id': ','.join(map(str, cameras)),
                                                              'limit': 100}).json()['data']
            return found if found and all(s['identity_id'] for s in found) else None
        sightings = wait_for(linked, 60, 'every demo sighting linked to an identity')
        assert len(sightings) == sum(j['metrics']['sightings'] for j in jobs)
        chosen = max(httpx.get(base + '/v1/identities', params={'limit': 100}).json()['data'],
                     key=lambda p: p['sighting_count'])

        browser.get(base + '/')
        browser.find_element(By.CSS_SELECTOR, 'nav button[data-tab=identities]').click()
        _click_when_there(browser, f"#i-list button.identity[data-identity-id='{chosen['id']}']")
        bars = _wait(lambda: browser.find_elements(By.CSS_SELECTOR, '#timeline rect.sighting'))
        assert len(bars) == chosen['sighting_count']
    finally:
        proc.terminate()
        proc.wait()
