// Serving, per model: the versions loaded, the instances, the batcher's
// settings, and over time (from the inference statistics, polled) the
// throughput, latency, queue time, queue depth and batch size; the batch
// sizes run so far.

import { api, can, seg } from './api.js';
import { h, fill, table, badge, num } from './dom.js';
import { lineChart, barChart, Series } from './chart.js';
import { statsDelta } from './stats.js';

export async function render(ctx, name) {
  const index = await api('/v2/repository/index', { method: 'POST', body: {} });
  if (!name) {
    const names = [...new Set(index.map(m => m.name))].sort();
    fill(ctx.el, h('h1', 'Serving'), h('section', table([
      { label: 'Model', value: n => can(`infer:${n}`) ? h('a', { href: `#/serving/${seg(n)}` }, n) : n },
      { label: 'Versions', value: n => index.filter(m => m.name === n).map(m => `${m.version ?? '—'} ${m.state}`).join(', ') },
    ], names, { id: 'serving-models', empty: 'No model.' })));
    return;
  }
  const config = await api(`/v2/models/${seg(name)}/config`);
  const groups = config.instance_group || [];
  const batching = config.dynamic_batching;
  const live = h('div.grid#serving-charts'), hist = h('div#batch-sizes');
  fill(ctx.el,
    h('p', h('a', { href: '#/serving' }, '← Serving')),
    h('h1', `Serving ${name}`),
    h('div.grid',
      h('section', h('h2', 'Versions'), table([
        { label: 'Version', value: m => m.version ?? '—' },
        { label: 'State', value: m => badge(m.state) },
        { label: 'Reason', value: m => m.reason ?? '' },
      ], index.filter(m => m.name === name), { id: 'serving-versions', empty: 'Not in the repository.' })),
      h('section', h('h2', 'Instances'), table([
        { label: 'Group', value: g => g.name || '—' },
        { label: 'Count', value: g => g.count, num: true },
        { label: 'Kind', value: g => g.kind },
      ], groups, { id: 'serving-instances', empty: 'One instance (the default).' }),
      h('p.muted#serving-batching', `Max batch size ${config.max_batch_size}` + (batching
        ? ` · dynamic batching: preferred ${JSON.stringify(batching.preferred_batch_size || [])}, max queue delay ${batching.max_queue_delay_microseconds ?? 0} µs`
        : ' · no dynamic batching')))),
    h('section', h('h2', 'Over time'), h('p.muted', 'From the inference statistics, every 2 s: requests per second, mean latency, mean queue time and mean batch size of each version between two readings, and the requests waiting in its queue at each reading.'), live),
    h('section', h('h2', 'Batch sizes run'), hist));

  const series = { rps: new Series(), lat: new Series(), queue: new Series(), depth: new Series(), batch: new Series() };
  let before = null;
  await ctx.every(2000, async () => {
    const now = { at: Date.now(), stats: (await api(`/v2/models/${seg(name)}/stats`)).model_stats };
    for (const m of now.stats) series.depth.add(`version ${m.version}`, m.queue_depth ?? 0, now.at);
    if (before) {
      for (const d of statsDelta(before, now, { byVersion: true })) {
        const v = `version ${d.version}`;
        series.rps.add(v, d.rps, now.at);
        series.lat.add(v, d.latencyMs, now.at);
        series.queue.add(v, d.queueMs, now.at);
        series.batch.add(v, d.batch, now.at);
      }
    }
    before = now;
    fill(live,
      lineChart(series.rps.list(), { title: 'Requests per second', unit: '/s' }),
      lineChart(series.lat.list(), { title: 'Mean latency (ms)', unit: 'ms' }),
      lineChart(series.queue.list(), { title: 'Mean queue time (ms)', unit: 'ms' }),
      lineChart(series.depth.list(), { title: 'Queue depth (requests waiting)', unit: '' }),
      lineChart(series.batch.list(), { title: 'Mean batch size', unit: '' }));
    const sizes = new Map();
    for (const m of now.stats) for (const b of m.batch_stats) {
      sizes.set(b.batch_size, (sizes.get(b.batch_size) || 0) + b.compute_infer.count);
    }
    const bars = [...sizes.entries()].sort((a, b) => a[0] - b[0]).map(([k, n]) => ({ label: String(k), value: n }));
    fill(hist, bars.length ? barChart(bars, { title: 'Executions per batch size (since start)' }) : h('p.muted', 'Nothing ran yet.'),
      h('p.muted#serving-counts', now.stats.map(m => `version ${m.version}: ${m.inference_count} inferences in ${m.execution_count} executions, ${m.instances ?? '?'} instances, ${m.queue_depth ?? 0} waiting`).join(' · ')));
  });
}
