"""Model files: round trip, atomic writes, and refusal of corrupt or unsafe files."""

import errno
import io
import json
import os
import tracemalloc
import warnings
import zipfile

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV

from fastnn import MLPClassifier, load_model
from fastnn.errors import FastnnError, ModelFileError
from fastnn.io import FORMAT_VERSION, META_KEY, load_model_file, save_model_file


@pytest.fixture(scope="module")
def fitted(digits):
    return MLPClassifier((16,), max_iter=3, random_state=0).fit(digits.X_train, digits.y_train)


def test_round_trip_preserves_predictions_and_metadata(tmp_path, fitted, digits):
    path = tmp_path / "m.npz"
    fitted.save(path, metadata={"dataset": "digits"})
    loaded = load_model(path)
    np.testing.assert_array_equal(
        loaded.predict_proba(digits.X_test), fitted.predict_proba(digits.X_test)
    )
    assert loaded.classes_.tolist() == fitted.classes_.tolist()
    assert loaded.loss_curve_ == fitted.loss_curve_ and loaded.n_iter_ == 3
    assert loaded.metadata_ == {"dataset": "digits"}
    assert loaded.get_params()["hidden_layer_sizes"] == (16,)
    _, meta, _ = load_model_file(path)
    assert meta["format_version"] == FORMAT_VERSION and meta["layer_sizes"] == [64, 16, 10]


def test_string_labels_survive_a_round_trip(tmp_path, digits):
    names = np.array(
        ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    )
    model = MLPClassifier((8,), max_iter=2, random_state=0).fit(
        digits.X_train, names[digits.y_train]
    )
    model.save(tmp_path / "m.npz")
    loaded = load_model(tmp_path / "m.npz")
    np.testing.assert_array_equal(loaded.predict(digits.X_test), model.predict(digits.X_test))
    assert loaded.predict(digits.X_test[:1])[0] in names


def test_interrupted_save_keeps_the_previous_file(tmp_path, fitted, monkeypatch):
    path = tmp_path / "m.npz"
    fitted.save(path)
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(KeyboardInterrupt):
        fitted.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]  # no temporary left behind


def _good_arrays(tmp_path, fitted):
    fitted.save(tmp_path / "good.npz")
    with np.load(tmp_path / "good.npz") as z:
        return {k: z[k] for k in z.files}


def test_truncated_file(tmp_path, fitted):
    fitted.save(tmp_path / "m.npz")
    data = (tmp_path / "m.npz").read_bytes()
    (tmp_path / "m.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="m.npz: not a readable fastnn model file"):
        load_model(tmp_path / "m.npz")


def test_pickled_object_inside_is_refused_without_running_it(tmp_path, fitted):
    arrays = _good_arrays(tmp_path, fitted)
    arrays["param_0"] = np.array([object()], dtype=object)
    np.savez(tmp_path / "evil.npz", **arrays)
    with pytest.raises(ModelFileError, match="evil.npz: not a readable fastnn model file.*pickle"):
        load_model(tmp_path / "evil.npz")


def test_wrong_shapes(tmp_path, fitted):
    arrays = _good_arrays(tmp_path, fitted)
    arrays["param_2"] = arrays["param_2"][:5]
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ModelFileError, match=r"parameter param_2 has shape \(5, 10\).*\(16, 10\)"):
        load_model(tmp_path / "bad.npz")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format_version": FORMAT_VERSION + 1}, "newer than this fastnn reads"),
        ({"format_version": None}, "no format_version"),
        ({"layer_sizes": [64, -1, 10]}, "layer_sizes must be a list of positive integers"),
        ({"dtype": "int8"}, "dtype must be one of"),
        ({"classes": [0, 1]}, "one label per output unit"),
    ],
)
def test_bad_metadata(tmp_path, fitted, change, message):
    arrays = _good_arrays(tmp_path, fitted)
    meta = {**json.loads(str(arrays[META_KEY])), **change}
    arrays[META_KEY] = np.array(json.dumps(meta))
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ModelFileError, match=message):
        load_model(tmp_path / "bad.npz")


def test_not_an_npz_and_not_fastnn(tmp_path):
    (tmp_path / "a.npz").write_text("not a zip")
    with pytest.raises(ModelFileError, match="a.npz: not a readable"):
        load_model(tmp_path / "a.npz")
    np.savez(tmp_path / "b.npz", w=np.zeros(3))
    with pytest.raises(ModelFileError, match="b.npz: not a fastnn model file"):
        load_model(tmp_path / "b.npz")
    with zipfile.ZipFile(tmp_path / "c.npz", "w") as z:
        z.writestr(f"{META_KEY}.npy", b"garbage")
    with pytest.raises(ModelFileError, match="c.npz: corrupt metadata"):
        load_model(tmp_path / "c.npz")
    with pytest.raises(ModelFileError, match="no such model file"):
        load_model(tmp_path / "missing.npz")


def test_save_into_missing_directory(tmp_path):
    with pytest.raises(ModelFileError, match="does not exist"):
        save_model_file(tmp_path / "nope" / "m.npz", [np.zeros((2, 2))], {})


# ---- bounded reads: a model file's headers cannot make fastnn allocate what it does not hold --


def _rewrite(path, arrays, raw=None, compress=zipfile.ZIP_STORED):
    """Write ``arrays`` as an .npz at ``path`` plus ``raw`` members given as .npy bytes."""
    with zipfile.ZipFile(path, "w", compress) as z:
        for k, a in arrays.items():
            buf = io.BytesIO()
            np.save(buf, a)
            z.writestr(f"{k}.npy", buf.getvalue())
        for k, data in (raw or {}).items():
            z.writestr(f"{k}.npy", data)


def _npy_header(shape, descr="<f4"):
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": descr, "fortran_order": False, "shape": shape}
    )
    return buf.getvalue()


def test_a_large_unused_member_is_never_read(tmp_path, fitted, digits):
    arrays = _good_arrays(tmp_path, fitted)
    arrays["junk"] = np.zeros(32 << 20, np.uint8)  # 32 MB, a few KB deflated
    _rewrite(tmp_path / "m.npz", arrays, compress=zipfile.ZIP_DEFLATED)
    tracemalloc.start()
    try:
        model = load_model(tmp_path / "m.npz")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20
    np.testing.assert_array_equal(model.predict(digits.X_test), fitted.predict(digits.X_test))


@pytest.mark.parametrize("member", ["param_0", "extra_slot", META_KEY])
def test_a_member_declaring_36_tib_is_refused_before_allocating(tmp_path, fitted, member):
    arrays = _good_arrays(tmp_path, fitted)
    arrays.pop(member, None)
    descr = "<U1" if member == META_KEY else "<f4"
    bomb = _npy_header((5_000_000, 2_000_000), descr) + bytes(44000)
    _rewrite(tmp_path / "bomb.npz", arrays, {member: bomb}, zipfile.ZIP_DEFLATED)
    with pytest.raises(ModelFileError, match=r"bomb.npz: .*\(5000000, 2000000\)"):
        load_model(tmp_path / "bomb.npz")


def test_a_param_declaring_more_than_it_holds(tmp_path, fitted):
    arrays = _good_arrays(tmp_path, fitted)
    arrays.pop("param_0")
    _rewrite(tmp_path / "short.npz", arrays, {"param_0": _npy_header((64, 16)) + bytes(40)})
    with pytest.raises(ModelFileError, match=r"short.npz: param_0 declares .* but holds only"):
        load_model(tmp_path / "short.npz")


@pytest.mark.parametrize("kind", ["directory", "fifo", "dev-zero"])
def test_model_path_that_is_not_a_regular_file(special_file, kind):
    target = special_file("m.npz", kind)
    with pytest.raises(ModelFileError, match="m.npz: not a regular file"):
        load_model(target)


# ---- hand-edited metadata: one line naming the file and the entry, never a traceback --------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"activation": "swish"}, "activation 'swish' is unknown"),
        ({"activation": ["relu"]}, "activation .* is unknown"),
        ({"estimator_params": [1, 2]}, "estimator_params must be a JSON object, got list"),
        ({"estimator_params": "adam"}, "estimator_params must be a JSON object, got str"),
        ({"estimator_params": {"alpha": "big"}}, "estimator parameter alpha='big'"),
        ({"estimator_params": {"max_iter": [3]}}, r"estimator parameter max_iter=\[3\]"),
        ({"estimator_params": {"solver": 7}}, "estimator parameter solver=7"),
        ({"history": [{"epoch": 1}]}, "history entry 0 has no finite loss"),
        ({"history": [{"loss": "low"}]}, "history entry 0 has no finite loss"),
        ({"history": [{"loss": float("nan")}]}, "history entry 0 has no finite loss"),
        ({"history": "long"}, "history must be a list"),
        ({"history": [{"loss": 1.0, "samples": -5}]}, "history entry 0 has samples -5"),
        ({"estimator": ["MLPClassifier"]}, "estimator .* is unknown"),
        ({"user": [1]}, "user must be a JSON object"),
        ({"training_state": "yes"}, "training_state must be a JSON object"),
        ({"feature_names": [1, 2]}, "feature_names must be a list of strings"),
        ({"feature_names": ["a", "b"]}, "feature_names lists 2 names for 64 inputs"),
        ({"classes": [0, 0, 1, 2, 3, 4, 5, 6, 7, 8]}, "classes lists 0 more than once"),
        ({"classes": [[0]] * 10}, "classes must be labels of one kind"),
        ({"classes": [0, "1", 2, 3, 4, 5, 6, 7, 8, 9]}, "classes must be labels of one kind"),
        ({"layer_sizes": [64, True, 10]}, "layer_sizes must be a list of positive integers"),
    ],
)
def test_hand_edited_metadata(tmp_path, fitted, change, message):
    arrays = _good_arrays(tmp_path, fitted)
    meta = {**json.loads(str(arrays[META_KEY])), **change}
    arrays[META_KEY] = np.array(json.dumps(meta))
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ModelFileError, match=f"bad.npz: .*{message}") as info:
        load_model(tmp_path / "bad.npz")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("where", ["top", "user"])
def test_deeply_nested_json_metadata(tmp_path, fitted, where):
    arrays = _good_arrays(tmp_path, fitted)
    deep = "[" * 100000 + "]" * 100000
    text = str(arrays[META_KEY])
    text = deep if where == "top" else text.replace('"user": {}', f'"user": {{"x": {deep}}}')
    arrays[META_KEY] = np.array(text)
    np.savez(tmp_path / "deep.npz", **arrays)
    with pytest.raises(ModelFileError, match="deep.npz: corrupt metadata .*nested too deeply"):
        load_model(tmp_path / "deep.npz")


@pytest.mark.parametrize(("param", "value"), [("param_0", np.nan), ("param_3", np.inf)])
def test_non_finite_weights_are_refused(tmp_path, fitted, param, value):
    arrays = _good_arrays(tmp_path, fitted)
    arrays[param] = arrays[param].copy()
    arrays[param].flat[0] = value
    np.savez(tmp_path / "nan.npz", **arrays)
    with pytest.raises(ModelFileError, match=f"nan.npz: parameter {param} contains NaN"):
        load_model(tmp_path / "nan.npz")


# ---- save writes what load reads, whatever happened to the estimator since its fit ----------


def test_save_after_set_params_keeps_the_fitted_architecture(tmp_path, fitted, digits):
    model = clone(fitted).set_params(hidden_layer_sizes=(16,))
    model.fit(digits.X_train, digits.y_train)
    model.set_params(hidden_layer_sizes=(5, 5))
    model.save(tmp_path / "m.npz")
    loaded = load_model(tmp_path / "m.npz")
    assert loaded.hidden_layer_sizes == (16,)
    np.testing.assert_array_equal(loaded.predict(digits.X_test), model.predict(digits.X_test))


def test_save_after_a_warm_start_with_changed_sizes_loads(tmp_path, digits):
    model = MLPClassifier((8,), max_iter=2, warm_start=True, random_state=0)
    model.fit(digits.X_train, digits.y_train)
    model.set_params(hidden_layer_sizes=(4,))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(digits.X_train, digits.y_train)
    model.save(tmp_path / "m.npz")
    loaded = load_model(tmp_path / "m.npz")
    assert loaded.hidden_layer_sizes == tuple(c.shape[1] for c in model.coefs_[:-1])
    np.testing.assert_array_equal(loaded.predict(digits.X_test), model.predict(digits.X_test))


def test_save_refuses_parameters_that_load_would_refuse(tmp_path, fitted):
    model = clone(fitted).set_params(max_iter=1)
    model.fit(np.eye(4), [0, 1, 0, 1])
    model.set_params(alpha=-1.0)
    with pytest.raises(ModelFileError, match=r"cannot save to .*m.npz: estimator parameter alpha"):
        model.save(tmp_path / "m.npz")
    assert not (tmp_path / "m.npz").exists()


@pytest.mark.parametrize(
    "grid",
    [
        {"hidden_layer_sizes": np.array([5, 10])},  # numpy int64 sizes
        {"hidden_layer_sizes": [np.array([6, 3])], "alpha": np.array([1e-4])},
        {"random_state": np.arange(1, 2), "learning_rate_init": np.array([1e-3])},
    ],
)
def test_save_after_grid_search_over_numpy_values(tmp_path, digits, grid):
    search = GridSearchCV(MLPClassifier(max_iter=2, random_state=0), grid, cv=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        search.fit(digits.X_train[:300], digits.y_train[:300])
    best = search.best_estimator_
    best.save(tmp_path / "m.npz")
    loaded = load_model(tmp_path / "m.npz")
    np.testing.assert_array_equal(loaded.predict(digits.X_test), best.predict(digits.X_test))


def test_integer_hidden_layer_sizes_round_trip(tmp_path, digits):
    model = MLPClassifier(hidden_layer_sizes=7, max_iter=2, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(digits.X_train, digits.y_train)
    model.save(tmp_path / "m.npz")
    assert load_model(tmp_path / "m.npz").hidden_layer_sizes == (7,)


# ---- a full disk: the error names the file, the previous file survives, no temporary --------


@pytest.mark.parametrize("where", ["write", "fsync"])
def test_full_disk_names_the_file_and_keeps_the_previous_one(tmp_path, fitted, monkeypatch, where):
    path = tmp_path / "m.npz"
    fitted.save(path)
    before = path.read_bytes()
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    if where == "write":

        def savez(file, **arrays):
            file.write(b"partial")
            raise full

        monkeypatch.setattr(np, "savez", savez)
    else:

        def fsync(fd):
            raise full

        monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OSError, match=r"cannot write .*m.npz: the disk is full") as info:
        fitted.save(path)
    assert isinstance(info.value, FastnnError) and info.value.errno == errno.ENOSPC
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]
