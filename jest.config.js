/** @type {import('jest').Config} */
module.exports = {
  preset: 'ts-jest',
  testEnvironment: 'node',
  roots: ['<rootDir>/test', '<rootDir>/examples'],
  testMatch: ['**/*.test.ts'],
  // e2e tests start real registries and clients; they share the machine's 2 cores.
  maxWorkers: 2,
  testTimeout: 120000,
};
