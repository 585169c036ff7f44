// Type-checks Grafana dashboard JSON files against the published @grafana/schema types.
//
// Usage: node check.mjs [dashboard.json ...]   (default: every ../dashboards/*.json)
//
// For each dashboard it writes a .ts file that assigns the JSON, as an object literal, to the
// schema's Dashboard type, and each panel's options and fieldConfig.defaults.custom to the
// types of that panel plugin; then runs `tsc --noEmit --strict` on them. Object literals get
// TypeScript's excess-property check, so unknown keys fail as well as wrong types or missing
// required fields. Exit status 1 on any error.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));

// Panel plugin id -> module of its generated option types. A panel type missing here fails the
// check: every panel must be checkable.
const PANEL_TYPES = {
  timeseries: 'timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen',
  stat: 'stat/panelcfg/x/StatPanelCfg_types.gen',
  table: 'table/panelcfg/x/TablePanelCfg_types.gen',
  'state-timeline': 'statetimeline/panelcfg/x/StateTimelinePanelCfg_types.gen',
  bargauge: 'bargauge/panelcfg/x/BarGaugePanelCfg_types.gen',
  gauge: 'gauge/panelcfg/x/GaugePanelCfg_types.gen',
  text: 'text/panelcfg/x/TextPanelCfg_types.gen',
};

// JSON carries an enum's value ("absolute"), while TypeScript's string enums only accept their
// members (ThresholdsMode.Absolute). Wire<T> turns every string enum into the union of its
// values and leaves all other types, required fields and excess-property checks as they are.
const WIRE = `type Wire<T> =
  T extends string ? \`\${T}\`
  : T extends number | boolean | null | undefined ? T
  : T extends Array<infer U> ? Array<Wire<U>>
  : T extends object ? { [K in keyof T]: Wire<T[K]> }
  : T;
`;

function panelsOf(dashboard) {
  const out = [];
  for (const p of dashboard.panels ?? []) {
    out.push(p);
    if (p.type === 'row') out.push(...(p.panels ?? []));
  }
  return out.filter((p) => p.type !== 'row');
}

function tsFor(dashboard, problems, file) {
  const lines = [`import type { Dashboard } from '@grafana/schema';`];
  const used = new Map();
  const decls = [`export const dashboard: Wire<Dashboard> = ${JSON.stringify(dashboard, null, 2)};`];
  for (const [i, panel] of panelsOf(dashboard).entries()) {
    const mod = PANEL_TYPES[panel.type];
    if (!mod) {
      problems.push(`${file}: panel ${panel.id} "${panel.title}": no schema known for panel type "${panel.type}"`);
      continue;
    }
    const alias = `P_${panel.type.replace(/\W/g, '_')}`;
    used.set(alias, mod);
    const tag = `panel_${i}_id_${panel.id}`;
    decls.push(`export const ${tag}_options: Wire<${alias}.Options> = ${JSON.stringify(panel.options ?? {}, null, 2)};`);
    const custom = panel.fieldConfig?.defaults?.custom;
    if (custom !== undefined) {
      decls.push(`export const ${tag}_custom: Wire<${alias}.FieldConfig> = ${JSON.stringify(custom, null, 2)};`);
    }
  }
  for (const [alias, mod] of used) {
    lines.push(`import type * as ${alias} from '@grafana/schema/dist/esm/raw/composable/${mod}';`);
  }
  return [...lines, WIRE, ...decls, ''].join('\n');
}

function main() {
  const files = process.argv.slice(2).length
    ? process.argv.slice(2).map((f) => path.resolve(f))
    : fs.readdirSync(path.join(here, '..', 'dashboards'))
        .filter((f) => f.endsWith('.json'))
        .map((f) => path.join(here, '..', 'dashboards', f));
  if (files.length === 0) {
    console.error('no dashboard files found');
    process.exit(1);
  }

  // Inside this folder so that the generated files resolve @grafana/schema from node_modules.
  const work = fs.mkdtempSync(path.join(here, '.generated-'));
  const problems = [];
  try {
    const sources = files.map((file, i) => {
      let dashboard;
      try {
        dashboard = JSON.parse(fs.readFileSync(file, 'utf8'));
      } catch (e) {
        problems.push(`${file}: not valid JSON: ${e.message}`);
        return null;
      }
      const ts = path.join(work, `d${i}_${path.basename(file, '.json').replace(/\W/g, '_')}.ts`);
      fs.writeFileSync(ts, tsFor(dashboard, problems, file));
      return ts;
    }).filter(Boolean);

    fs.writeFileSync(path.join(work, 'tsconfig.json'), JSON.stringify({
      compilerOptions: {
        strict: true,
        noEmit: true,
        target: 'ES2022',
        module: 'ESNext',
        moduleResolution: 'bundler',
        skipLibCheck: true,
        types: [],
      },
      files: sources.map((s) => path.basename(s)),
    }));

    const tsc = path.join(here, 'node_modules', 'typescript', 'bin', 'tsc');
    try {
      execFileSync(process.execPath, [tsc, '-p', path.join(work, 'tsconfig.json'), '--pretty', 'false'],
        { cwd: work, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    } catch (e) {
      const out = `${e.stdout ?? ''}${e.stderr ?? ''}`.trim();
      // Name the dashboard and quote the offending generated line, not just the temp file.
      for (const line of out.split('\n')) {
        const m = line.match(/^(.*?\.ts)\((\d+),(\d+)\): (.*)$/);
        if (!m) {
          problems.push(line);
          continue;
        }
        const idx = Number(path.basename(m[1]).match(/^d(\d+)_/)?.[1]);
        const src = fs.readFileSync(path.resolve(work, m[1]), 'utf8').split('\n')[Number(m[2]) - 1] ?? '';
        problems.push(`${files[idx] ?? m[1]}: ${m[4]}\n    at: ${src.trim()}`);
      }
      if (!out) problems.push(`tsc failed: ${e.message}`);
    }
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }

  if (problems.length) {
    console.error(problems.join('\n'));
    console.error(`schema check FAILED: ${problems.length} problem(s) in ${files.length} dashboard(s)`);
    process.exit(1);
  }
  console.log(`schema check passed: ${files.length} dashboard(s) match @grafana/schema`);
}

main();
