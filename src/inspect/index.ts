/** Read-only commands over a fixture folder: `verify` (is it sound and complete?) and `ls` (what does it hold?). */
export { verify, formatReport } from './verify';
export type { VerifyReport, Problem, InspectOptions } from './verify';
export { ls, formatListing } from './ls';
export type { Listing, RepositoryListing, TagListing, ManifestListing, BlobListing } from './ls';
