import type { Command } from 'commander';
import { requireDatabaseUrl } from '../config.js';
import { migrate } from '../db/migrate.js';
import { assertPostgresReachable } from '../runtime.js';
import { action, configFrom, withConfigOptions } from './common.js';

export function registerMigrate(program: Command): void {
  withConfigOptions(
    program
      .command('migrate')
      .description(
        'create the source tables (if absent), the publication, the replication slot and the state schema',
      ),
    ['databaseUrl', 'slotName', 'publicationName'],
  ).action(
    action(async (options: Record<string, unknown>) => {
      const config = configFrom(options);
      const databaseUrl = requireDatabaseUrl(config);
      await assertPostgresReachable(databaseUrl);
      const report = await migrate(databaseUrl, {
        slotName: config.slotName,
        publicationName: config.publicationName,
      });
      const tables =
        report.createdTables.length > 0
          ? `created tables ${report.createdTables.join(', ')}`
          : 'source tables present';
      process.stdout.write(
        `migrated: ${tables}; publication ${config.publicationName} ${report.publication}; slot ${config.slotName} ${report.slot}; state schema engagement_pipeline ready\n`,
      );
    }),
  );
}
