"""CORS on the gateway (`[gateway.cors]`), auth on, all-in-one: a browser
page from a configured origin gets its preflight answered without
credentials, may send `Authorization`, and may read mlserve's answer
headers; any other origin gets no CORS headers, so the browser refuses."""

import pytest

from helpers import copy_models, get, http_request, simple_json
from topology import start_topology

ORIGIN = "https://console.example.com"


@pytest.fixture(scope="module")
def topo(models_repo, tmp_path_factory):
    repo = copy_models(models_repo, tmp_path_factory.mktemp("cors_models"), ["simple"])
    t = start_topology("all_in_one", repo, tmp_path_factory.mktemp("cors_data"), "--auth", "on",
                       env={"MLSERVE_GATEWAY__CORS__ALLOWED_ORIGINS": f'["{ORIGIN}/"]'})
    yield t
    t.stop()


def preflight(topo, origin):
    return http_request(topo.gateway.gateway_http_port, "OPTIONS", "/v2/models/simple/infer", headers={
        "Origin": origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})


def test_a_configured_origin_passes_preflight_without_credentials(topo):
    r = preflight(topo, ORIGIN)
    assert r.status == 200, r
    assert r.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in r.headers["access-control-allow-methods"]
    assert "authorization" in r.headers["access-control-allow-headers"].lower()
    assert r.headers["access-control-max-age"] == "600"


def test_other_origins_get_no_cors_headers(topo):
    r = preflight(topo, "https://evil.example")
    assert "access-control-allow-origin" not in r.headers, r.headers
    key = topo.keys("create", "--name", "cors-other").strip()
    r = get(topo.gateway.gateway_http_port, "/v2/models/simple",
            headers={"Origin": "https://evil.example", "Authorization": f"Bearer {key}"})
    assert r.status == 200 and "access-control-allow-origin" not in r.headers


def test_the_real_request_is_authenticated_and_its_headers_readable(topo):
    port = topo.gateway.gateway_http_port
    body, _ = simple_json(1, seed=2)
    r = http_request(port, "POST", "/v2/models/simple/infer", body=body, headers={"Origin": ORIGIN})
    assert r.status == 401, r
    assert r.headers["access-control-allow-origin"] == ORIGIN, "the browser may read the 401"
    key = topo.keys("create", "--name", "cors").strip()
    r = http_request(port, "POST", "/v2/models/simple/infer", body=body,
                     headers={"Origin": ORIGIN, "Authorization": f"Bearer {key}"})
    assert r.status == 200, r
    assert r.headers["access-control-allow-origin"] == ORIGIN
    exposed = r.headers["access-control-expose-headers"].lower()
    assert "x-mlserve-model-version" in exposed and "retry-after" in exposed
    assert "origin" in r.headers.get("vary", "").lower()
