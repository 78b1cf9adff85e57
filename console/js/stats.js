// Rates from two readings of the Open Inference Protocol's cumulative
// statistics (/v2/models/stats): requests, failures, mean latency, mean
// queue time and mean batch size between the readings.

const key = m => `${m.name}\u0000${m.version}`;

/**
 * `before` and `now`: {at: ms, stats: model_stats}. Returns one entry per
 * model (`byVersion`: per model version) with per-second rates and means
 * over the interval (null where nothing ran).
 */
export function statsDelta(before, now, { byVersion = false } = {}) {
  const dt = Math.max(0.001, (now.at - before.at) / 1000);
  const old = new Map(before.stats.map(m => [key(m), m]));
  const acc = new Map();
  for (const m of now.stats) {
    const o = old.get(key(m));
    if (!o) continue;
    const id = byVersion ? key(m) : m.name;
    const a = acc.get(id) || { name: m.name, version: byVersion ? m.version : '', ok: 0, okNs: 0, fail: 0, queue: 0, queueNs: 0, infer: 0, exec: 0 };
    const s = m.inference_stats, p = o.inference_stats;
    a.ok += s.success.count - p.success.count;
    a.okNs += s.success.ns - p.success.ns;
    a.fail += s.fail.count - p.fail.count;
    a.queue += s.queue.count - p.queue.count;
    a.queueNs += s.queue.ns - p.queue.ns;
    a.infer += m.inference_count - o.inference_count;
    a.exec += m.execution_count - o.execution_count;
    acc.set(id, a);
  }
  return [...acc.values()].map(a => ({
    name: a.name,
    version: a.version,
    rps: a.ok / dt,
    failRps: a.fail / dt,
    errorRate: a.ok + a.fail ? a.fail / (a.ok + a.fail) : 0,
    latencyMs: a.ok ? a.okNs / a.ok / 1e6 : null,
    queueMs: a.queue ? a.queueNs / a.queue / 1e6 : null,
    batch: a.exec ? a.infer / a.exec : null,
  }));
}

/**
 * The `q` quantile of the observations between two readings of a
 * cumulative histogram (`[{le, count}]`, `total` observations in all), as
 * Prometheus' histogram_quantile: linear within the bucket it falls in;
 * past the last finite bound, that bound. Null when nothing was observed.
 */
export function histogramQuantile(q, before, now) {
  const total = now.total - before.total;
  if (total <= 0) return null;
  const rank = q * total;
  let lower = 0, below = 0;
  for (let i = 0; i < now.buckets.length; i++) {
    const le = now.buckets[i].le;
    const seen = now.buckets[i].count - (before.buckets[i]?.count || 0);
    if (seen >= rank) {
      const inBucket = seen - below;
      return inBucket > 0 ? lower + (le - lower) * (rank - below) / inBucket : le;
    }
    lower = le;
    below = seen;
  }
  return lower;
}
