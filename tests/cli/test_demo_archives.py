"""The demo's archive format: uncompressed to an API on this machine (CPU, not the link, is what is short), gzip
elsewhere (segarena/demo.py ``is_loopback``; the system test checks the demo's upload against a local API)."""

from __future__ import annotations

import pytest

from segarena.demo import is_loopback


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000", "http://127.8.9.10/", "http://localhost:8000/api",
                                 "http://LOCALHOST", "http://[::1]:8000"])
def test_this_machine_is_loopback(url):
    assert is_loopback(url)


@pytest.mark.parametrize("url", ["https://segarena.example.org", "http://10.0.0.5:8000", "http://192.168.1.2",
                                 "http://[2001:db8::1]/", "http://localhost.example.org", "not a url"])
def test_other_hosts_are_not(url):
    assert not is_loopback(url)
