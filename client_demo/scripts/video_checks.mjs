// What the browser checks (browser_check.mjs, whep_check.mjs) measure of a playing <video>,
// through playwright: playback over one second of wall clock, and a frame's luminance.

// currentTime's advance and the frames presented (requestVideoFrameCallback) over ~1 s.
export function measurePlayback(page, videoId) {
  return page.evaluate(
    (id) =>
      new Promise((resolve) => {
        const v = document.getElementById(id);
        const start = { time: v.currentTime, wall: performance.now() };
        let frames = 0;
        const count = () => {
          frames += 1;
          v.requestVideoFrameCallback(count);
        };
        v.requestVideoFrameCallback(count);
        setTimeout(() => {
          const wall = (performance.now() - start.wall) / 1000;
          resolve({
            width: v.videoWidth,
            height: v.videoHeight,
            advance_s: v.currentTime - start.time,
            window_s: wall,
            fps: frames / wall,
            paused: v.paused,
          });
        }, 1000);
      }),
    videoId,
  );
}

// The current frame drawn through a canvas (scaled to `width` px wide): mean and spread of
// its luminance (Rec. 709), 0-255.
export function frameLuminance(page, videoId, width = 160) {
  return page.evaluate(
    ({ id, w }) => {
      const v = document.getElementById(id);
      const h = Math.max(1, Math.round((w * v.videoHeight) / v.videoWidth));
      const canvas = document.createElement('canvas');
      canvas.width = w;
      canvas.height = h;
      const ctx = canvas.getContext('2d', { willReadFrequently: true });
      ctx.drawImage(v, 0, 0, w, h);
      const data = ctx.getImageData(0, 0, w, h).data;
      let sum = 0;
      let sq = 0;
      for (let p = 0; p < data.length; p += 4) {
        const y = 0.2126 * data[p] + 0.7152 * data[p + 1] + 0.0722 * data[p + 2];
        sum += y;
        sq += y * y;
      }
      const n = data.length / 4;
      const mean = sum / n;
      return { mean, std: Math.sqrt(Math.max(0, sq / n - mean * mean)) };
    },
    { id: videoId, w: width },
  );
}
