from pipeline.screen import deal_stats, screen, selection_ranges
from pipeline.verdict import PeekStats, ViabilityRule

AVG_ROWS = 4


def _avg(avg90_new: int) -> list[list[int]]:
    rows = [[-1] * 4 for _ in range(AVG_ROWS)]
    rows[3][1] = avg90_new
    return rows


def test_deal_stats_reads_new_price_ninety_day_average_and_sales_rank():
    current = [-1, 700, -1, 1234]
    assert deal_stats(current, _avg(1000)) == PeekStats(700, 1000, 1234)


def test_deal_stats_is_no_data_where_the_deal_has_no_such_numbers():
    assert deal_stats([5], []) == PeekStats(-1, -1, -1)


def test_screen_passes_a_deal_whose_own_numbers_pass_the_rule_and_says_why_others_fail():
    assert screen([-1, 700, -1, 1234], _avg(1000)).viable
    small_drop = screen([-1, 950, -1, 1234], _avg(1000))
    assert not small_drop.viable and "drop 5.0%" in small_drop.reason
    no_rank = screen([-1, 700, -1, -1], _avg(1000))
    assert not no_rank.viable and "sales rank" in no_rank.reason


def test_selection_ranges_carry_the_rule_within_keepas_limits():
    fields = selection_ranges(ViabilityRule(min_drop_percent=20.5, max_sales_rank=5000, min_price=300))
    assert fields["isRangeEnabled"] is True
    assert fields["currentRange"][0] == 300
    assert fields["deltaPercentRange"] == [20, 100]
    assert fields["salesRankRange"] == [0, 5000]
    assert fields["dateRange"] == 3 and fields["priceTypes"] == [1]


def test_selection_ranges_leave_out_a_drop_below_keepas_minimum_of_ten_percent():
    assert "deltaPercentRange" not in selection_ranges(ViabilityRule(min_drop_percent=5))
