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
  )
    .option(
      '--recreate-slot',
      'drop and recreate an invalidated slot, or recreate a dropped one (changes in the gap must be backfilled)',
    )
    .action(
      action(async (options: Record<string, unknown>) => {
        const config = configFrom(options);
        const databaseUrl = requireDatabaseUrl(config);
        await assertPostgresReachable(databaseUrl);
        const report = await migrate(databaseUrl, {
          slotName: config.slotName,
          publicationName: config.publicationName,
          recreateSlot: options.recreateSlot === true,
        });
        const tables =
          report.createdTables.length > 0
            ? `created tables ${report.createdTables.join(', ')}`
            : 'source tables present';
        process.stdout.write(
          `migrated: ${tables}; publication ${config.publicationName} ${report.publication}; slot ${config.slotName} ${report.slot}; state schema engagement_pipeline ready\n`,
        );
        if (report.slot === 'recreated') {
          const from = report.lastDeliveredAt ?? '<the time of the last event your sinks received>';
          process.stdout.write(
            `the slot was recreated: changes committed while it was missing are not in it; run\n  engagement backfill --from ${from} --to ${new Date().toISOString()}\n`,
          );
        }
      }),
    );
}
