"""The web page in real headless Chromium: a query shows ranked thumbnails; an upload appears in the gallery."""
import shutil
import time

import httpx
import pytest

from tests.app.conftest import ROOT, files_for, free_port, start_server

CHROMIUM, DRIVER = shutil.which('chromium'), shutil.which('chromedriver')
pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not (CHROMIUM and DRIVER), reason='needs Debian packages chromium and chromium-driver (make test installs them)')]


@pytest.fixture(scope='module')
def server(tmp_path_factory, service_model, dataset, learnable_root):
    port = free_port()
    data_dir = tmp_path_factory.mktemp('web')
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
