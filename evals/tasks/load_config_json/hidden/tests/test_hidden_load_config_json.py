from appconf.settings import DEFAULTS, load_config


def test_empty_object_and_defaults_untouched():
    assert load_config("{}") == {"debug": False, "port": 8000}
    load_config('{"debug": true}')
    assert DEFAULTS["debug"] is False
