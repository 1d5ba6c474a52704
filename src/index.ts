/** regtape's public API. */
export { record, DEFAULT_UPSTREAM } from './record/proxy';
export type { RecordOptions, RecordServer } from './record/proxy';
export { replay } from './replay/server';
export type { ReplayOptions, ReplayServer } from './replay/server';
export { Matcher, requestIdentity } from './replay/match';
export type { RequestView, Miss } from './replay/match';
export { readMarkdown, writeMarkdown } from './fixture/markdown';
export { readYaml, writeYaml } from './fixture/yaml';
export { loadFixtures, parseFixture, serialize } from './fixture/files';
export type { FixtureFormat, LoadedExchange, LoadResult } from './fixture/files';
export { BodyStore } from './fixture/store';
export * from './fixture/model';
export { UserError } from './http/server';
