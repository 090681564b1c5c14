"""VOCSegmentation on a tiny VOC-layout folder: reading, every bad-data case, trainaug, download."""

import functools
import hashlib
import http.server
import shutil
import tarfile
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from deeplab_lessons.data import VOC_PALETTE, VOCSegmentation, make_synthetic_voc, save_palette_png
from deeplab_lessons.data import voc as voc_module
from deeplab_lessons.data.voc import download_voc, prepare_trainaug, rgb_to_labels


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    return make_synthetic_voc(tmp_path_factory.mktemp("voc"), n_train=4, n_val=2, size=(40, 48), seed=1)


@pytest.fixture
def voc(pristine, tmp_path):
    """A private copy each test may damage."""
    root = tmp_path / "VOCdevkit" / "VOC2012"
    shutil.copytree(pristine, root)
    return root


def test_reads_images_and_palette_masks_as_indices(voc):
    ds = VOCSegmentation(voc, "train")
    assert len(ds) == 4 and len(VOCSegmentation(voc.parent.parent, "val")) == 2   # either root form
    image, mask = ds[0]
    assert image.dtype == torch.uint8 and image.shape == (3, 40, 48)
    assert mask.dtype == torch.int64 and mask.shape == (40, 48)
    raw = np.array(Image.open(voc / "SegmentationClass" / f"{ds.ids[0]}.png"))
    assert torch.equal(mask, torch.from_numpy(raw.astype(np.int64)))
    assert set(mask.unique().tolist()) <= set(range(21)) | {255}
    assert 255 in mask.unique().tolist()


def test_transforms_are_applied(voc):
    ds = VOCSegmentation(voc, "train", transforms=lambda i, m: (i[:, :8, :8], m[:8, :8]))
    image, mask = ds[1]
    assert image.shape == (3, 8, 8) and mask.shape == (8, 8)


def test_missing_folder_says_how_to_get_the_data(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no VOC 2012 at .*download=True"):
        VOCSegmentation(tmp_path / "nowhere", "train")
    with pytest.raises(ValueError, match="split must be one of"):
        VOCSegmentation(tmp_path, "test")


def _first(voc, split="train"):
    return (voc / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()[0]


def test_corrupt_jpeg_names_the_file(voc):
    name = _first(voc)
    (voc / "JPEGImages" / f"{name}.jpg").write_bytes(b"not a jpeg at all")
    with pytest.raises(ValueError, match=rf"image .*{name}\.jpg is corrupt"):
        VOCSegmentation(voc, "train")[0]


def test_truncated_jpeg_names_the_file(voc):
    name = _first(voc)
    path = voc / "JPEGImages" / f"{name}.jpg"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match=rf"{name}\.jpg is corrupt or truncated"):
        VOCSegmentation(voc, "train")[0]


def test_missing_image_and_mask(voc):
    name = _first(voc)
    (voc / "SegmentationClass" / f"{name}.png").unlink()
    with pytest.raises(FileNotFoundError, match=rf"mask .*{name}\.png listed in the train split is missing"):
        VOCSegmentation(voc, "train")[0]
    (voc / "JPEGImages" / f"{name}.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=rf"image .*{name}\.jpg listed in the train split is missing"):
        VOCSegmentation(voc, "train")[0]


def test_mask_size_mismatch(voc):
    name = _first(voc)
    save_palette_png(np.zeros((20, 48), np.uint8), voc / "SegmentationClass" / f"{name}.png")
    with pytest.raises(ValueError, match=r"mask .* is 48x20 but image .* is 48x40"):
        VOCSegmentation(voc, "train")[0]


def test_rgb_mask_is_converted_through_the_palette(voc):
    ds = VOCSegmentation(voc, "train")
    _, expected = ds[0]
    path = voc / "SegmentationClass" / f"{ds.ids[0]}.png"
    Image.fromarray(VOC_PALETTE[expected.numpy()]).save(path)          # an RGB PNG
    assert Image.open(path).mode == "RGB"
    assert torch.equal(ds[0][1], expected)


def test_rgb_mask_with_foreign_colours_is_refused(voc):
    ds = VOCSegmentation(voc, "train")
    _, mask = ds[0]
    rgb = VOC_PALETTE[mask.numpy()].copy()
    rgb[5, 5] = (1, 2, 3)
    Image.fromarray(rgb).save(voc / "SegmentationClass" / f"{ds.ids[0]}.png")
    with pytest.raises(ValueError, match=rf"{ds.ids[0]}\.png is RGB and holds colours .*\[1, 2, 3\]"):
        ds[0]
    with pytest.raises(ValueError, match="expected an RGB mask"):
        rgb_to_labels(np.zeros((4, 4)))


def test_labels_out_of_range(voc):
    name = _first(voc)
    labels = np.zeros((40, 48), np.uint8)
    labels[3, 3] = 30
    save_palette_png(labels, voc / "SegmentationClass" / f"{name}.png")
    with pytest.raises(ValueError, match=rf"{name}\.png has labels \[30\] outside 0..20 and 255"):
        VOCSegmentation(voc, "train")[0]


def test_empty_split_file(voc):
    (voc / "ImageSets" / "Segmentation" / "val.txt").write_text("\n\n")
    with pytest.raises(ValueError, match=r"val\.txt lists no images"):
        VOCSegmentation(voc, "val")


def _write_sbd(root, ids, shape=(40, 48)):
    from scipy.io import savemat

    (root / "cls").mkdir(parents=True)
    masks = {}
    for k, image_id in enumerate(ids):
        mask = np.zeros(shape, np.uint8)
        mask[5:15, 5 + k:20 + k] = k + 1
        savemat(root / "cls" / f"{image_id}.mat", {"GTcls": {"Segmentation": mask}})
        masks[image_id] = mask
    (root / "train.txt").write_text("\n".join(ids[:-1]) + "\n")
    (root / "val.txt").write_text(ids[-1] + "\n")
    return masks


def test_prepare_trainaug_from_an_sbd_stand_in(voc, tmp_path):
    train_ids = (voc / "ImageSets/Segmentation/train.txt").read_text().split()
    val_ids = (voc / "ImageSets/Segmentation/val.txt").read_text().split()
    # SBD covers two VOC train images and one VOC val image (which must be left out)
    sbd_ids = [train_ids[0], train_ids[1], val_ids[0]]
    masks = _write_sbd(tmp_path / "sbd", sbd_ids)
    with pytest.raises(FileNotFoundError, match="prepare_trainaug"):
        VOCSegmentation(voc, "trainaug")
    split_file = prepare_trainaug(voc, tmp_path / "sbd")
    assert split_file.read_text().split() == sorted(train_ids)
    ds = VOCSegmentation(voc, "trainaug")
    assert ds.ids == sorted(train_ids) and ds.mask_dir.name == "SegmentationClassAug"
    by_id = dict(zip(ds.ids, range(len(ds))))
    assert np.array_equal(ds[by_id[train_ids[0]]][1].numpy(), masks[train_ids[0]])       # SBD's mask
    voc_mask = VOCSegmentation(voc, "train")[2][1]                                        # not in SBD: VOC's
    assert torch.equal(ds[by_id[train_ids[2]]][1], voc_mask)
    with pytest.raises(FileNotFoundError, match="download=True"):
        prepare_trainaug(voc, tmp_path / "no_sbd")


@pytest.fixture
def served_archive(voc, tmp_path):
    """The tiny VOC folder as a tar on a local HTTP server (a stand-in for the VOC mirror): (url, md5)."""
    archive = tmp_path / "archive" / voc_module.VOC2012_ARCHIVE["filename"]
    archive.parent.mkdir()
    with tarfile.open(archive, "w") as tar:
        tar.add(voc, arcname="VOCdevkit/VOC2012")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(archive.parent))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/{archive.name}", hashlib.md5(archive.read_bytes()).hexdigest()
    server.shutdown()
    server.server_close()


def test_download_checks_the_md5_and_extracts(served_archive, tmp_path):
    url, md5 = served_archive
    got = download_voc(tmp_path / "dl", url=url, md5=md5)
    assert got == tmp_path / "dl" / "VOCdevkit" / "VOC2012"
    assert len(VOCSegmentation(got, "train")) == 4
    with pytest.raises(RuntimeError, match="MD5"):
        download_voc(tmp_path / "dl2", url=url, md5="0" * 32)


def test_dataset_download_flag(served_archive, tmp_path, monkeypatch):
    url, md5 = served_archive
    monkeypatch.setitem(voc_module.VOC2012_ARCHIVE, "url", url)
    monkeypatch.setitem(voc_module.VOC2012_ARCHIVE, "md5", md5)
    target = tmp_path / "fresh"
    with pytest.raises(FileNotFoundError):
        VOCSegmentation(target, "val")
    ds = VOCSegmentation(target, "val", download=True)
    assert len(ds) == 2 and ds.root == target / "VOCdevkit" / "VOC2012"


def test_image_batches_keep_order_and_never_mix_sizes():
    from deeplab_lessons.data import image_batches

    shapes = [(3, 4, 5), (3, 4, 5), (3, 4, 5), (3, 6, 5), (3, 4, 5)]
    data = [(torch.full(s, k, dtype=torch.uint8), torch.full(s[1:], k, dtype=torch.int64)) for k, s in enumerate(shapes)]
    batches = list(image_batches(data, 5, batch_size=2))
    assert [b[0].shape[0] for b in batches] == [2, 1, 1, 1]               # 0-1 | 2 | 3 (other size) | 4
    assert torch.cat([b[0][:, 0, 0, 0] for b in batches]).tolist() == [0, 1, 2, 3, 4]
    assert [b[1].shape[1:] for b in batches][2] == (6, 5)
    assert len(list(image_batches(data, 3, batch_size=8))) == 1 and not list(image_batches(data, 0, 4))
    with pytest.raises(ValueError, match="batch_size"):
        list(image_batches(data, 2, 0))
