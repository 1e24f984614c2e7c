// What the status bar shows, from the server's `vllmGhost/status` notifications and the client's
// own view (server process starting, server missing, completions toggled off).
//
// Pure (no `vscode` import) so node's test runner covers it.

export const STATES = ['starting', 'loading', 'ready', 'error', 'stopped', 'disabled'] as const;
export type State = (typeof STATES)[number];

export interface Status {
  state: State;
  message: string;
  detail: Record<string, unknown>;
}

export type Severity = 'normal' | 'warning' | 'error';

export interface View {
  /** Status bar text with codicons. */
  text: string;
  tooltip: string;
  /** Accessible label, also what the end-to-end test waits for: `vLLM Ghost: <state>`. */
  label: string;
  severity: Severity;
}

export const NAME = 'vLLM Ghost';

/** Validate a `vllmGhost/status` payload; anything malformed becomes an error status saying so. */
export function parseStatus(raw: unknown): Status {
  if (typeof raw !== 'object' || raw === null) {
    return { state: 'error', message: `malformed status notification: ${JSON.stringify(raw)}`, detail: {} };
  }
  const record = raw as Record<string, unknown>;
  const state = record.state;
  if (typeof state !== 'string' || !(STATES as readonly string[]).includes(state)) {
    return { state: 'error', message: `unknown server state ${JSON.stringify(state)}`, detail: {} };
  }
  const message = typeof record.message === 'string' ? record.message : '';
  const detail =
    typeof record.detail === 'object' && record.detail !== null && !Array.isArray(record.detail)
      ? (record.detail as Record<string, unknown>)
      : {};
  return { state: state as State, message, detail };
}

const ICONS: Record<State, string> = {
  starting: '$(loading~spin)',
  loading: '$(loading~spin)',
  ready: '$(check)',
  error: '$(error)',
  stopped: '$(debug-stop)',
  disabled: '$(circle-slash)',
};

const TITLES: Record<State, string> = {
  starting: 'starting',
  loading: 'loading the model',
  ready: 'ready',
  error: 'error',
  stopped: 'stopped',
  disabled: 'completions off',
};

export interface PresentOptions {
  /** `vllmGhost.completion.enabled`; when false the item says so whatever the backend does. */
  completionsEnabled: boolean;
  /** The latest work-done progress message or percentage while loading. */
  progress?: string;
  /** Snoozed until this time (ms since the epoch), when in the future; `now` is the clock. */
  snoozedUntil?: number;
  now?: number;
  /** The active editor's language, and whether vllmGhost.completion.disabledLanguages lists it. */
  language?: { id: string; disabled: boolean };
}

/** Whole minutes left of a snooze (at least 1 while any is left); 0 when not snoozed. */
export function snoozeMinutesLeft(until: number | undefined, now: number): number {
  return until !== undefined && until > now ? Math.max(1, Math.ceil((until - now) / 60000)) : 0;
}

/** Whether completions may be asked for now: not snoozed, and not off for the language. */
export function completionsAllowed(language: string, disabledLanguages: readonly string[], snoozedUntil: number | undefined, now: number): boolean {
  return snoozeMinutesLeft(snoozedUntil, now) === 0 && !disabledLanguages.includes(language);
}

/** `disabledLanguages` with `language` added (off) or removed (on). */
export function toggledLanguages(disabledLanguages: readonly string[], language: string): string[] {
  return disabledLanguages.includes(language)
    ? disabledLanguages.filter(id => id !== language)
    : [...disabledLanguages, language];
}

/** Status bar text, tooltip and colour for a status. */
export function present(status: Status, options: PresentOptions): View {
  const state: State = !options.completionsEnabled && status.state !== 'error' ? 'disabled' : status.state;
  let text = `${ICONS[state]} ${NAME}`;
  if (state === 'loading' || state === 'starting') {
    const progress = options.progress || status.message;
    text += progress ? `: ${shorten(progress, 40)}` : '';
  } else if (state === 'stopped' || state === 'disabled') {
    text += state === 'disabled' ? ': off' : ': stopped';
  }
  const snoozed = snoozeMinutesLeft(options.snoozedUntil, options.now ?? Date.now());
  const languageOff = options.language?.disabled === true && state !== 'error';
  if (state !== 'error' && state !== 'disabled' && snoozed > 0) {
    text = `$(clock) ${NAME}: snoozed ${snoozed} min`;
  } else if (languageOff && state !== 'disabled') {
    text = `$(circle-slash) ${NAME}: off for ${options.language?.id}`;
  }
  const lines = [`${NAME}: ${TITLES[state]}`];
  if (snoozed > 0) {
    lines.push(`Snoozed: ${snoozed} min left`);
  }
  if (options.language) {
    lines.push(`Completions for ${options.language.id}: ${options.language.disabled ? 'off' : 'on'}`);
  }
  if (status.message && status.message !== TITLES[state]) {
    lines.push(status.message);
  }
  if (!options.completionsEnabled) {
    lines.push(`Backend: ${status.state}`);
  }
  const model = status.detail.model;
  if (typeof model === 'string' && model) {
    lines.push(`Model: ${model}`);
  }
  const url = status.detail.url;
  if (typeof url === 'string' && url) {
    lines.push(`Endpoint: ${url}`);
  }
  const seconds = status.detail.startupSeconds;
  if (typeof seconds === 'number') {
    lines.push(`Started in ${seconds.toFixed(1)} s`);
  }
  lines.push(...sharing(status.detail));
  lines.push(...acceptanceLines(status.detail.acceptance));
  const lastLines = status.detail.lastLines;
  if (state === 'error' && Array.isArray(lastLines) && lastLines.length > 0) {
    lines.push('', ...lastLines.slice(-5).map(line => String(line)));
  }
  lines.push('', 'Click for vLLM Ghost commands');
  // A stop the user chose (Stop Model, autoStart, the idle unload) is not a warning.
  const chosen = typeof status.detail.stoppedBy === 'string';
  const severity: Severity = state === 'error' ? 'error' : state === 'stopped' && !chosen ? 'warning' : 'normal';
  const label = state !== 'error' && state !== 'disabled' && snoozed > 0 ? `${NAME}: snoozed` : `${NAME}: ${state}`;
  return { text, tooltip: lines.join('\n'), label, severity };
}

/** The tooltip's "is it worth it" lines, from `detail.acceptance` (counted by the server, locally). */
export function acceptanceLines(raw: unknown): string[] {
  if (typeof raw !== 'object' || raw === null) {
    return [];
  }
  const total = (raw as Record<string, unknown>).total;
  if (typeof total !== 'object' || total === null) {
    return [];
  }
  const counts = total as Record<string, unknown>;
  const number = (key: string): number => (typeof counts[key] === 'number' ? (counts[key] as number) : 0);
  if (number('shown') === 0) {
    return [];
  }
  const percent = (value: number): string => `${Math.round(value * 100)}%`;
  const lines = [
    `Accepted ${number('accepted')} of ${number('shown')} shown (${percent(number('accepted') / number('shown'))}), ` +
      `${number('acceptedChars')} characters`,
  ];
  if (number('checkedChars') > 0) {
    lines.push(`Still there 30 s later: ${percent(number('retainedChars') / number('checkedChars'))} of them`);
  }
  const latency = counts.latencyMs as Record<string, unknown> | undefined;
  if (latency && typeof latency.p50 === 'number' && typeof latency.p95 === 'number') {
    lines.push(`Latency p50 ${Math.round(latency.p50)} ms, p95 ${Math.round(latency.p95)} ms`);
  }
  return lines;
}

/** How completions share the vLLM with others (Continue, a team): the server's priority and cache salt. */
function sharing(detail: Record<string, unknown>): string[] {
  const lines: string[] = [];
  const priority = detail.priority;
  if (typeof priority === 'number') {
    // External mode cannot see the server's policy: a FCFS vLLM takes the field and ignores it.
    const effect = detail.schedulingPolicy === 'priority'
      ? "ahead of Continue's requests"
      : 'sent; it counts where vLLM runs --scheduling-policy priority';
    lines.push(`Priority: ${priority} (${effect})`);
  } else if (typeof priority === 'string' && priority.startsWith('not sent')) {
    lines.push(`Priority: ${priority}`);
  }
  const salt = detail.cacheSalt;
  if (salt === 'on') {
    lines.push('Prefix cache: private to you (cache_salt)');
  } else if (typeof salt === 'string' && salt.startsWith('not sent')) {
    lines.push(`cache_salt: ${salt}`);
  }
  return lines;
}

function shorten(text: string, max: number): string {
  return text.length <= max ? text : text.slice(0, max - 1) + '…';
}

/** A work-done progress value (begin/report/end) as one short string, or undefined at the end. */
export function progressText(value: unknown): string | undefined {
  if (typeof value !== 'object' || value === null) {
    return undefined;
  }
  const record = value as Record<string, unknown>;
  if (record.kind === 'end') {
    return undefined;
  }
  const parts: string[] = [];
  if (typeof record.message === 'string' && record.message) {
    parts.push(record.message);
  } else if (typeof record.title === 'string' && record.title) {
    parts.push(record.title);
  }
  if (typeof record.percentage === 'number') {
    parts.push(`${Math.round(record.percentage)}%`);
  }
  return parts.length ? parts.join(' ') : undefined;
}
