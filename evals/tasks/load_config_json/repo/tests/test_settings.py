from appconf.settings import load_config


def test_overrides_port():
    assert load_config('{"port": 9000}') == {"debug": False, "port": 9000}
