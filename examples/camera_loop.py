"""Embed the Inspector in your own pypylon grab loop (copy this and adapt it).

Plain pypylon: open a camera, grab, convert to BGR, ``Inspector.check``, act on
the verdict. No camera? pylon's emulator gives one, replaying a folder:

    PYLON_CAMEMU=1 python examples/camera_loop.py models/bottle --folder ../shared/data/bottle/test/good --frames 5
    python examples/camera_loop.py models/bottle --serial 40123456 --software-trigger

For a production line (verdict log, reject output, reconnects, several cameras)
use ``apc-inspect`` instead.
"""
import argparse
import sys
from pathlib import Path

from pypylon import pylon

from apc_edge import Inspector


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model_dir")
    p.add_argument("--serial", help="camera serial number (default: the first camera found)")
    p.add_argument("--folder", type=Path, help="emulated camera only: replay the images of this folder")
    p.add_argument("--software-trigger", action="store_true", help="one trigger per frame instead of free-run")
    p.add_argument("--frames", type=int, default=20)
    args = p.parse_args()

    inspector = Inspector(args.model_dir)            # load the model before touching the camera
    factory = pylon.TlFactory.GetInstance()
    devices = [d for d in factory.EnumerateDevices() if args.serial in (None, d.GetSerialNumber())]
    if not devices:
        print(f"no camera {args.serial or ''} found (PYLON_CAMEMU=1 gives an emulated one)", file=sys.stderr)
        return 2
    camera = pylon.InstantCamera(factory.CreateDevice(devices[0]))
    camera.Open()
    if args.folder:                                  # emulator: replay files, in name order, in colour
        camera.TestImageSelector.Value = "Off"
        camera.ImageFileMode.Value = "On"
        camera.ImageFilename.Value = str(args.folder.resolve())
        camera.PixelFormat.Value = "BGR8Packed"
        args.software_trigger = True                 # one trigger per file: every image is scored
    if args.software_trigger:
        camera.TriggerSelector.Value = "FrameStart"
        camera.TriggerMode.Value = "On"
        camera.TriggerSource.Value = "Software"
    converter = pylon.ImageFormatConverter()
    converter.OutputPixelFormat = pylon.PixelType_BGR8packed       # Mono, Bayer, RGB -> BGR for the model

    # free-run: keep only the newest image, so the camera never waits on the model
    camera.StartGrabbing(pylon.GrabStrategy_OneByOne if args.software_trigger
                         else pylon.GrabStrategy_LatestImageOnly)
    n_ng = 0
    try:
        for i in range(args.frames):
            if args.software_trigger:
                camera.WaitForFrameTriggerReady(1000, pylon.TimeoutHandling_ThrowException)
                camera.ExecuteSoftwareTrigger()
            grab = camera.RetrieveResult(5000, pylon.TimeoutHandling_ThrowException)
            try:
                if not grab.GrabSucceeded():
                    print(f"frame {i}: grab failed: {grab.GetErrorDescription()}")
                    continue
                frame = converter.ConvertToArray(grab)   # a new numpy array; the grab buffer goes back
            finally:
                grab.Release()
            try:
                result = inspector.check(frame)
            except ValueError as exc:                # malformed frame: report it, keep going
                print(f"frame {i}: bad frame: {exc}")
                continue
            n_ng += result.is_anomalous
            print(f"frame {i}: {'NG' if result.is_anomalous else 'OK'} score {result.score:.3f} "
                  f"({result.timings['total']:.0f} ms)")
            # if result.is_anomalous: drive a reject output here, save the image, ...
    finally:
        camera.StopGrabbing()
        camera.Close()
    print(f"{args.frames} frames, {n_ng} NG")
    return 0


if __name__ == "__main__":
    sys.exit(main())
