"""Reading scans and masks into arrays on a physical grid, and writing maps back.

NIfTI is read with nibabel (the neuroimaging reference for its affines); NRRD,
MetaImage, DICOM series and 2D images (PNG, TIFF, one DICOM file) with SimpleITK.
Every reader returns a `Scan`: a float32 array indexed ``[i, j, k]`` and its `Grid`
in RAS mm. A 2D image becomes a one-slice volume (shape ``(I, J, 1)``).

Every problem with a file raises `ScanError` whose message starts with the path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from uadcore.errors import ScanError
from uadcore.io.atomic import atomic_path, write_error
from uadcore.io.grid import Grid

NIFTI_SUFFIXES = (".nii", ".nii.gz")
ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd", ".dcm")
IMAGE_2D_SUFFIXES = (".png", ".tif", ".tiff")
SCAN_SUFFIXES = NIFTI_SUFFIXES + ITK_SUFFIXES + IMAGE_2D_SUFFIXES


@dataclass
class Scan:
    """A scan in memory.

    array: float32, shape grid.shape, voxel [i, j, k] at grid.affine @ (i, j, k, 1).
    """

    array: np.ndarray
    grid: Grid
    path: str

    @property
    def is_2d(self) -> bool:
        """True for a single slice (one axis of size 1), e.g. a radiograph."""
        return min(self.grid.shape) == 1


def has_scan_suffix(path: str) -> bool:
    return path.lower().endswith(SCAN_SUFFIXES)


def read_scan(path: str, need_3d: bool = False) -> Scan:
    """Read a scan file (or a folder holding one DICOM series).

    need_3d: refuse a 2D image (one slice), for models that work on volumes.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ScanError(f"{path}: no such file or folder")
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise ScanError(f"{path}: is empty (0 bytes)")
    try:
        if os.path.isdir(path):
            array, grid = _read_dicom_series(path)
        elif path.lower().endswith(NIFTI_SUFFIXES):
            array, grid = _read_nifti(path)
        else:
            array, grid = _read_with_sitk(path)
    except ScanError:
        raise
    except MemoryError as error:
        raise ScanError(f"{path}: too large to read into this machine's memory") from error
    except Exception as error:  # every reader failure is bad input, reported in one line
        raise ScanError(f"{path}: cannot read it as an image ({_one_line(error)})") from error

    _check_geometry(grid, path)
    scan = Scan(array, grid, path)
    if need_3d and scan.is_2d:
        raise ScanError(
            f"{path}: is 2D ({grid.describe()}); this needs a 3D volume"
        )
    bad = np.count_nonzero(~np.isfinite(array))
    if bad:
        raise ScanError(f"{path}: has {bad} NaN or infinite voxel values")
    return scan


SPACING_RANGE_MM = (0.05, 20.0)  # voxel sizes a medical image can have; anything else is a broken header
MAX_VOXELS = 1 << 30  # 4 GB as float32: larger than any scan, smaller than a corrupt header's claim


def _check_geometry(grid: Grid, path: str) -> None:
    """Refuse a geometry no scan has: NaN in the affine, a voxel size of 0 (a
    header without pixdim) or outside `SPACING_RANGE_MM` (where resampling would
    blur without end)."""
    affine = np.asarray(grid.affine, float)
    if not np.isfinite(affine).all():
        raise ScanError(f"{path}: its affine (voxel-to-world matrix) holds NaN or infinite values")
    spacing = np.asarray(grid.spacing, float)
    low, high = SPACING_RANGE_MM
    thin = grid.shape[2] == 1  # a 2D image: its third axis has no real extent
    checked = spacing[:2] if thin else spacing
    if (checked <= 0).any():
        raise ScanError(f"{path}: a voxel size of 0 mm ({' x '.join(f'{v:g}' for v in spacing)}): the header has no voxel sizes")
    if ((checked < low) | (checked > high)).any():
        raise ScanError(f"{path}: voxel size {' x '.join(f'{v:.3g}' for v in spacing)} mm is outside {low:g}-{high:g} mm; "
                        "the header's geometry is broken")


def refuse_a_mask(scan: Scan) -> None:
    """Refuse a "scan" whose voxels are all 0 or 1: a binary mask given where a
    scan belongs (a manifest's columns swapped, a mask in a folder of scans)."""
    array = scan.array
    if array.max() == 1.0 and array.min() == 0.0 and np.array_equal(array, array.astype(bool)):
        raise ScanError(f"{scan.path}: holds only the values 0 and 1: a mask, not a scan")


def read_mask(path: str, scan: Scan) -> np.ndarray:
    """Read a lesion or brain mask that must lie on exactly the grid of ``scan``.

    Returns a bool array of shape scan.grid.shape (voxels > 0 are inside).
    """
    mask = read_scan(path)
    if not mask.grid.matches(scan.grid):
        raise ScanError(
            f"{mask.path}: mask geometry does not match its scan {scan.path}: {scan.grid.difference(mask.grid)}"
        )
    return mask.array > 0


def write_nifti(array: np.ndarray, grid: Grid, path: str, description: str = "") -> str:
    """Write ``array`` (shape grid.shape) as NIfTI on ``grid``, atomically, with
    ``description`` in its header (descrip, at most 80 characters).

    Both qform and sform carry the affine, so nibabel, ITK and 3D Slicer all read
    the same geometry back. A ``.nii.gz`` is compressed on every core (see
    `gzip_members`).
    """
    import nibabel as nib

    array = np.asarray(array)
    if array.shape != grid.shape:
        raise ValueError(f"array shape {array.shape} is not the grid shape {grid.shape}")
    if array.dtype == np.float64 or array.dtype == bool:
        array = array.astype(np.float32 if array.dtype == np.float64 else np.uint8)
    image = nib.Nifti1Image(array, grid.affine)
    image.set_qform(grid.affine, code=1)
    image.set_sform(grid.affine, code=1)
    image.header["descrip"] = description[:80]
    path = os.fspath(path)
    try:
        with atomic_path(path) as temporary:
            if path.lower().endswith(".gz"):
                with open(temporary, "wb") as handle:
                    handle.write(gzip_members(image.to_bytes()))
            else:
                nib.save(image, temporary)
    except OSError as error:  # a full disk: the file named, nothing half-written left
        raise write_error(path, error) from error
    return path


def gzip_members(data: bytes, level: int = 1, workers: int | None = None) -> bytes:
    """``data`` gzip-compressed on ``workers`` threads (default: one per core), each
    compressing one consecutive piece into a gzip member of its own, like pigz
    (zlib releases the GIL). Pieces are at least 256 KiB.

    A file of several members is one valid gzip stream (RFC 1952): gzip, zlib's
    gzread (ITK, 3D Slicer, FSL) and Python's gzip module (nibabel) read it whole.
    Level 1 with zlib's run-length strategy: a map is zeros outside the brain and
    float noise inside, where longer matches are rare; on such maps it is twice as
    fast as level 1's default strategy and no larger.
    """
    import zlib

    workers = max(1, workers or os.cpu_count() or 1)
    piece = max(1 << 18, -(-len(data) // workers))
    view = memoryview(data)

    def member(start: int) -> bytes:
        compressor = zlib.compressobj(level, zlib.DEFLATED, 31, 8, zlib.Z_RLE)  # wbits 31: gzip header and trailer
        return compressor.compress(view[start : start + piece]) + compressor.flush()

    starts = range(0, max(len(data), 1), piece)
    if len(starts) == 1:
        return member(0)
    return b"".join(_threads(len(starts)).map(member, starts))


_THREAD_POOLS: dict = {}


def _threads(workers: int):
    """A pool of ``workers`` threads kept for this process (starting threads for every
    file costs ~1 ms). Keyed by process too: a forked child inherits the pool but
    not its threads."""
    from concurrent.futures import ThreadPoolExecutor

    key = (os.getpid(), workers)
    if key not in _THREAD_POOLS:
        _THREAD_POOLS[key] = ThreadPoolExecutor(workers, thread_name_prefix="uad-gzip")
    return _THREAD_POOLS[key]


# ---- readers -----------------------------------------------------------------
def _read_nifti(path: str) -> tuple[np.ndarray, Grid]:
    import nibabel as nib

    if path.lower().endswith(".gz"):
        data = _gunzip_nifti(path)
        nifti2 = data[:4] in (b"\x1c\x02\x00\x00", b"\x00\x00\x02\x1c")  # sizeof_hdr 540, either byte order
        image = (nib.Nifti2Image if nifti2 else nib.Nifti1Image).from_bytes(data)
    else:
        image = nib.load(path)
        with open(path, "rb") as handle:
            data = handle.read(540)  # the header, as written (nibabel's own copy is already "fixed")
    size = int(image.header.sizeof_hdr)  # 348 (NIfTI-1) or 540 (NIfTI-2): the header without its extensions
    as_written = type(image.header)(binaryblock=bytes(data[:size]), endianness=image.header.endianness, check=False)
    _check_nifti_header(image, path, len(data) if path.lower().endswith(".gz") else os.path.getsize(path), as_written)
    array = np.asarray(image.dataobj, dtype=np.float32)
    array = _as_volume(array, path)
    return array, Grid(array.shape, image.affine)


def _check_nifti_header(image, path: str, file_bytes: int, as_written) -> None:
    """What a NIfTI header claims, checked before its voxels are read: data there
    is (a header claiming 1200^3 voxels in a 71-byte file is refused before
    anything is allocated), one real grey value per voxel, voxel sizes, and
    whether its two geometries (qform, sform) agree."""
    from uadcore.errors import warn

    header = image.header
    dtype = header.get_data_dtype()
    if dtype.names:  # RGB or RGBA voxels
        raise ScanError(f"{path}: has {len(dtype.names)} values per voxel ({dtype}); UAD needs one grey value per voxel")
    if dtype.kind == "c":
        raise ScanError(f"{path}: has complex voxel values ({dtype}); UAD needs real grey values (magnitude images)")
    shape = image.shape
    voxels = int(np.prod(shape, dtype=np.int64)) if shape else 0
    claimed = voxels * dtype.itemsize
    offset = int(header.get("vox_offset", 0) or 0) if "vox_offset" in header else 0
    check_size(shape, dtype.itemsize, path)
    if claimed > max(file_bytes - offset, 0):
        raise ScanError(f"{path}: cannot read it as an image (the header claims {'x'.join(map(str, shape))} voxels of {dtype}, "
                        f"{claimed} bytes, the file holds {max(file_bytes - offset, 0)}: cut short or corrupt)")
    # nibabel turns a pixdim of 0 into 1 mm while reading; the header as written says what the scan gave
    zooms = [float(z) for z in as_written["pixdim"][1 : 1 + min(3, len(shape))]]
    if zooms and min(zooms) <= 0 and not as_written["sform_code"] > 0:
        raise ScanError(f"{path}: a voxel size of 0 in its header (pixdim {' '.join(f'{z:g}' for z in zooms)}) and no sform: "
                        "the header has no voxel sizes")
    qform, qcode = header.get_qform(coded=True)
    sform, scode = header.get_sform(coded=True)
    if qcode and scode and qform is not None and sform is not None:
        corners = np.array([[i, j, k, 1.0] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1)
                            for k in (0, (shape[2] - 1) if len(shape) > 2 else 0)])
        apart = float(np.max(np.linalg.norm((corners @ qform.T - corners @ sform.T)[:, :3], axis=1)))
        if apart > 1.0:
            warn(f"{path}: its qform and sform place the voxels up to {apart:.0f} mm apart; using the sform, as nibabel does")


GZIP_CHUNK = 1 << 20  # compressed bytes read at a time


def _gunzip_nifti(path: str) -> bytes:
    """The NIfTI file inside the gzip file ``path`` (every member, see
    `gzip_members`), inflated no further than its header says it needs: a header
    claiming too much is refused after its first bytes (a few MB of zeros inflate
    to GBs), and data past the voxels (or NUL padding after the last member) is
    never inflated. One pass: twice as fast as reading through nibabel's gzip file."""
    import zlib

    out = bytearray()
    needed = None  # the header's length, extensions and voxels, once the header is in
    stream, data = zlib.decompressobj(31), b""
    with open(path, "rb") as handle:
        while needed is None or len(out) < needed:
            if not data:
                data = handle.read(GZIP_CHUNK)
                if not data:
                    break  # the file ends: a stream cut short is refused by the header check
            if stream.eof:  # the next member, or padding after the last
                if not data.strip(b"\0"):
                    data = b""
                    continue
                stream = zlib.decompressobj(31)
            room = needed - len(out) if needed is not None else GZIP_CHUNK
            out += stream.decompress(data, room)
            data = stream.unused_data if stream.eof else stream.unconsumed_tail
            if needed is None and len(out) >= 348:
                needed = _nifti_bytes(bytes(out[:540]), path)
    return bytes(out)


def _nifti_bytes(start: bytes, path: str) -> int:
    """The length of the NIfTI file whose first bytes are ``start`` (its header,
    extensions and voxels), after `check_size` of what the header claims."""
    import nibabel as nib

    nifti2 = start[:4] in (b"\x1c\x02\x00\x00", b"\x00\x00\x02\x1c")  # sizeof_hdr 540, either byte order
    kind, size = (nib.Nifti2Header, 540) if nifti2 else (nib.Nifti1Header, 348)
    if len(start) < size:
        return size
    header = kind(binaryblock=start[:size], check=False)
    shape, dtype = header.get_data_shape(), header.get_data_dtype()
    check_size(shape, dtype.itemsize, path)
    return max(int(header["vox_offset"]), size) + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize


def check_size(shape, itemsize: int, path: str) -> None:
    """Refuse an image that no scan is, or that this machine cannot hold: more than
    `MAX_VOXELS`, or more memory for its voxels as read and as float32 than is free
    (checked from its header, before anything is allocated)."""
    voxels = int(np.prod([max(int(n), 0) for n in shape], dtype=np.int64)) if len(shape) else 0
    if voxels > MAX_VOXELS:
        raise ScanError(f"{path}: the header claims {'x'.join(map(str, shape))} voxels, more than any scan has; it is corrupt")
    needs, free = voxels * (itemsize + 4), _available_memory()
    if free is not None and needs > free:
        raise ScanError(f"{path}: too large to read into this machine's memory ({'x'.join(map(str, shape))} voxels need "
                        f"{needs / 2**30:.1f} GB, {free / 2**30:.1f} GB are free)")


def _available_memory() -> int | None:
    """Bytes of memory free for this process now (Linux: MemAvailable), None where unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def _read_with_sitk(path: str) -> tuple[np.ndarray, Grid]:
    import SimpleITK as sitk

    _check_claimed_size([path], path)
    return _from_sitk(sitk.ReadImage(path), path)


# DICOM transfer syntaxes whose pixel data is stored as it is (not compressed): its bytes can be counted
_UNCOMPRESSED_DICOM = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"}


def _check_claimed_size(files: list[str], path: str) -> None:
    """What the headers of ``files`` (one image, or the slices of one DICOM series
    ``path``) claim, checked before the pixels are read: not more than `check_size`
    allows, and, for DICOM stored uncompressed, not more bytes than each file holds
    (a header whose rows and columns were patched to 4096 in a file of 30 KB)."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    total, itemsize = 0, 1
    for name in files:
        reader.SetFileName(name)
        try:
            reader.ReadImageInformation()
        except RuntimeError:
            return  # no header to check: reading the pixels will say what is wrong
        size = [int(n) for n in reader.GetSize()]
        itemsize = _bytes_per_pixel(reader)
        pixels = int(np.prod(size, dtype=np.int64))
        total += pixels
        if _dicom_transfer_syntax(name) in _UNCOMPRESSED_DICOM and pixels * itemsize > os.path.getsize(name):
            raise ScanError(f"{path}: {os.path.basename(name)}: its header claims {'x'.join(map(str, size))} pixels, "
                            f"{pixels * itemsize} bytes, the file holds {os.path.getsize(name)}: it is corrupt")
    check_size([total], itemsize, path)


def _dicom_transfer_syntax(path: str) -> str | None:
    """The transfer syntax UID (0002,0010) of a DICOM file, None for another file.
    Read from the file's meta header (always explicit VR little endian): SimpleITK
    does not show group 0002."""
    with open(path, "rb") as handle:
        head = handle.read(4096)
    at = head.find(b"\x02\x00\x10\x00UI")
    if head[128:132] != b"DICM" or at < 0:
        return None
    length = int.from_bytes(head[at + 6 : at + 8], "little")
    return head[at + 8 : at + 8 + length].strip(b" \0").decode("ascii", "replace")


def _bytes_per_pixel(reader) -> int:
    """Bytes of one pixel of the image ``reader`` has read the header of
    (SimpleITK names its types "16-bit signed integer", "vector of 32-bit float")."""
    import re

    import SimpleITK as sitk

    bits = re.search(r"(\d+)-bit", sitk.GetPixelIDValueAsString(reader.GetPixelID()))
    return (int(bits.group(1)) // 8 if bits else 8) * reader.GetNumberOfComponents()


def _read_dicom_series(folder: str) -> tuple[np.ndarray, Grid]:
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    series = reader.GetGDCMSeriesIDs(folder)
    if not series:
        raise ScanError(f"{folder}: folder holds no DICOM series")
    if len(series) > 1:
        raise ScanError(
            f"{folder}: folder holds {len(series)} DICOM series; point to a folder with one"
        )
    files = reader.GetGDCMSeriesFileNames(folder, series[0])
    _check_claimed_size(files, folder)
    _check_slice_positions(files, folder)
    reader.SetFileNames(files)
    return _from_sitk(reader.Execute(), folder)


SLICE_GAP_TOLERANCE = 0.01  # of the typical slice distance: positions written with few decimals


def _check_slice_positions(files, folder: str) -> None:
    """Refuse a series whose slices are not evenly spaced along their normal (a
    missing or broken slice, two slices at one position): read as a volume, its
    voxels would be placed up to a slice off."""
    import SimpleITK as sitk

    if len(files) < 3:
        return
    positions, normal = [], None
    reader = sitk.ImageFileReader()
    for name in files:
        reader.SetFileName(name)
        try:
            reader.ReadImageInformation()
            positions.append([float(v) for v in reader.GetMetaData("0020|0032").split("\\")])
            if normal is None:
                row_col = [float(v) for v in reader.GetMetaData("0020|0037").split("\\")]
                normal = np.cross(row_col[:3], row_col[3:])
        except RuntimeError:
            return  # no positions to check (e.g. a secondary capture): SimpleITK's own reading decides
    distances = np.diff(np.asarray(positions) @ normal)
    typical = float(np.median(np.abs(distances)))
    off = np.abs(np.abs(distances) - typical) > SLICE_GAP_TOLERANCE * max(typical, 1e-6)
    if typical == 0 or off.any():
        first = int(np.argmax(off)) if off.any() else 0
        raise ScanError(
            f"{folder}: DICOM slices are not evenly spaced (files {os.path.basename(files[first])} and "
            f"{os.path.basename(files[first + 1])} are {abs(distances[first]):.3g} mm apart, the others {typical:.3g} mm): "
            "a slice is missing, broken or doubled; UAD would place the voxels wrongly"
        )


def _from_sitk(image, path: str) -> tuple[np.ndarray, Grid]:
    import SimpleITK as sitk

    if image.GetNumberOfComponentsPerPixel() > 1:
        if image.GetNumberOfComponentsPerPixel() in (3, 4) and image.GetDimension() == 2:
            # colour rendering of a 2D grey image (PNG, TIFF): take its luminance
            rgb = sitk.GetArrayFromImage(image)[..., :3].astype(np.float32)
            grey = sitk.GetImageFromArray(rgb @ np.array([0.299, 0.587, 0.114], np.float32))
            grey.CopyInformation(sitk.VectorIndexSelectionCast(image, 0))
            image = grey
        else:
            raise ScanError(
                f"{path}: has {image.GetNumberOfComponentsPerPixel()} values per voxel; "
                "UAD needs one grey value per voxel"
            )
    dimension = image.GetDimension()
    # SimpleITK arrays are indexed [k, j, i]; UAD's are [i, j, k]
    array = sitk.GetArrayFromImage(image).astype(np.float32).T
    if dimension == 2:
        origin = list(image.GetOrigin()) + [0.0]
        spacing = list(image.GetSpacing()) + [1.0]
        direction = np.eye(3)
        direction[:2, :2] = np.reshape(image.GetDirection(), (2, 2))
    elif dimension in (3, 4):
        if dimension == 4 and image.GetSize()[3] != 1:
            raise ScanError(
                f"{path}: is 4D ({'x'.join(map(str, image.GetSize()))}); UAD needs one 3D volume"
            )
        origin = list(image.GetOrigin())[:3]
        spacing = list(image.GetSpacing())[:3]
        direction = np.reshape(image.GetDirection(), (dimension, dimension))[:3, :3]
    else:
        raise ScanError(f"{path}: is {dimension}D; UAD needs a 2D image or a 3D volume")
    array = _as_volume(array, path)
    return array, Grid.from_lps(array.shape, origin, spacing, direction)


def _as_volume(array: np.ndarray, path: str) -> np.ndarray:
    """Shape (I, J, K): a 2D image gets one slice, a 4D file with one frame is fine."""
    while array.ndim > 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        return array[:, :, None]
    if array.ndim != 3:
        raise ScanError(
            f"{path}: is {array.ndim}D ({'x'.join(map(str, array.shape))}); UAD needs one 3D volume"
        )
    return np.ascontiguousarray(array)


def _one_line(error: Exception) -> str:
    """The informative line of an exception (ITK's are many lines long)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    for line in lines:  # ITK puts the reason after "Description:" or in a line of its own
        if line.lower().startswith("description:"):
            return line.split(":", 1)[1].strip()
    text = lines[-1] if lines[0].startswith(("Exception thrown", "sitk::ERROR")) else lines[0]
    return text[:300]
